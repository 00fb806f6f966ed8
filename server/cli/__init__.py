"""The ``quantserve`` command: serving, model preparation, and the quantization toolkit commands."""
