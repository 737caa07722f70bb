"""Bad ``freeprompt ui`` command lines (issue #35), in the format of ``bad_cli_cases.py``: each is refused before
any model is loaded, with one line on stderr that names the problem, exit status 2 and no traceback. A port in use
and a host that does not resolve are checked in a subprocess with a timeout (``tests/ui/test_ui_command.py``),
since today they would hang. Each row: (id, argv, a word the message must contain)."""

UI = ["ui", "--model", "shapes"]

CASES = [
    ("ui-max-upload-word", UI + ["--max-upload", "abc"], "max-upload"),
    ("ui-max-upload-no-unit", UI + ["--max-upload", "20"], "not a size"),
    ("ui-max-upload-unknown-unit", UI + ["--max-upload", "20xb"], "20xb"),
    ("ui-max-upload-fraction", UI + ["--max-upload", "1.5gb"], "1.5gb"),
    ("ui-max-upload-zero", UI + ["--max-upload", "0mb"], "refuse every upload"),
    ("ui-max-upload-negative", UI + ["--max-upload", "-5mb"], "-5mb"),
    ("ui-max-upload-empty", UI + ["--max-upload", ""], "max-upload"),
    ("ui-max-upload-huge", UI + ["--max-upload", "99999999999999999999mb"], "not a size"),
    ("ui-host-empty", UI + ["--host", ""], "--host is empty"),
    ("ui-host-blank", UI + ["--host", "  "], "--host is empty"),
    ("ui-host-nul", UI + ["--host", "local\x00host"], "--host"),
    ("ui-port-zero", UI + ["--port", "0"], "port"),
    ("ui-port-negative", UI + ["--port", "-1"], "port"),
    ("ui-port-word", UI + ["--port", "http"], "port"),
    ("ui-device-unknown", UI + ["--device", "tpu"], "device"),
    ("ui-dtype-unknown", UI + ["--dtype", "fp8"], "dtype"),
]
