"""Hydra plugin of cerebro (the ``cerebro-autopsy`` distribution): see :mod:`.cerebro_searchpath`."""
