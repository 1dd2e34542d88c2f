"""Imported only in the ``forkserver`` process (its preload list, set by :mod:`obliviate.parallel`):
makes the forkserver die with the process that started it, then pays torch's one-off costs
once, so that every worker forked from it starts warm: the import of torch and its lazily
imported optimiser machinery (the first ``torch.optim`` optimiser imports ``torch._dynamo``,
seconds on a loaded machine). No intra-op thread pool starts here (one-element tensors only),
so forking stays safe. Never import it elsewhere: it would tie the importing process's life to its
own parent."""

from obliviate._lifetime import die_with_parent

die_with_parent()  # first: a parent killed during torch's import takes the forkserver along

import torch  # noqa: E402

torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
