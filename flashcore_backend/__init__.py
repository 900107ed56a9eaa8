"""FlashCore's vLLM adapter: the FLASHCORE attention backend (the only package that imports vLLM).

Importing this package imports nothing else: vLLM loads ``flashcore_backend.plugin:register`` in
each of its processes, and the backend classes (``flashcore_backend.backend``) load only when a
layer selects them.
"""
