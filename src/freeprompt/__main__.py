"""`python -m freeprompt ...` is the `freeprompt` command (also under `accelerate launch -m freeprompt ...`)."""

from freeprompt.cli import run

if __name__ == "__main__":
    run()
