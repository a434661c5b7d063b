"""The top layer: the seedq command line and embedded mode (``seedq run``)."""
