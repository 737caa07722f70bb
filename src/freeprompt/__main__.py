"""`python -m freeprompt ...` is the `freeprompt` command (also under `accelerate launch -m freeprompt ...`)."""

from freeprompt.cli.main import main

if __name__ == "__main__":
    main()
