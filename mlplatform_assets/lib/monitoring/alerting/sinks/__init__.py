"""One module per alert sink; every module here is imported by :func:`..sink.sink_types`."""
