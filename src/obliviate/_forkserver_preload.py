"""Imported only in the ``forkserver`` process (its preload list, set by :mod:`obliviate.parallel`):
makes the forkserver die with the process that started it. Never import it elsewhere: it would
tie the importing process's life to its own parent."""

from obliviate._lifetime import die_with_parent

die_with_parent()
