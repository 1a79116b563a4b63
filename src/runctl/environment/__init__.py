"""A job's Python environment, built with uv from what the project declares and cached in
the job's store, so that a replacement instance restores it instead of resolving again.

- ``detect``: which declaration the project has (uv project, requirements.txt, PEP 723
  inline metadata, or none) and the Python version it asks for. Pure.
- ``key``: the cache key, a hash of everything the built environment depends on. Pure.
- ``build``: the uv subprocesses and the job's setup commands.
- ``cache``: pack, upload, download and unpack a built environment.
- ``prepare``: the one call an agent makes: present here, else restored, else built.
"""
