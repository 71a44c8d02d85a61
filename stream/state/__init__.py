"""The tables' stores: one contract (``base``), kept by a dict backend (``memory``, ``KPI_STORE=memory://``) and a
RocksDB one (``disk``, ``KPI_STORE=disk://``), and the changelog offsets they hold (``checkpoints``)."""

from faust.stores import STORES

# Faust finds a store by its URL's scheme; ``memory://`` is Faust's own, so ours is named apart.
STORES.aliases["disk"] = "stream.state.disk:DiskStore"
STORES.aliases["partitioned"] = "stream.state.memory:MemoryStore"
