"""Stand-ins for vendor tools that exist nowhere here: `vamc` (fake_vamc.py) and the
`vaststreamx` runtime (vaststreamx/). They check what the project hands them against the
vendor's documented contract and compute real outputs with the torch model."""
