"""How a tensor becomes bytes: the sparse index (`sparse_index`), the entropy coders
(`huffman`, `rans`, `cabac`, behind the registry `coders`) and the per-tensor codecs
(`codec`). Pure functions on arrays; nothing here knows about models or files."""
