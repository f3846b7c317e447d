"""HTTP routes: thin handlers that decode, call into the gateway and encode."""
