"""Validation of packs from strangers: a pack is refused at load, with a PackError naming the field, unless
every header field is well typed and in range (``header``), every node is what its op defines
(``context`` and the ``*_ops`` modules) and the graph as a whole is consistent (``graph``).
See docs/pack-format.md, "Validation".
"""
