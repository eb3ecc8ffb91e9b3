"""``starcli serve``: a resident model behind an HTTP API (``api``), its requests run one after
another on one worker thread (``jobs``), and the client ``starcli ask --server`` uses (``client``)."""
