"""The web UI (``freeprompt ui``): gradio, installed with the ``ui`` extra."""
