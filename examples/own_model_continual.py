"""Continual learning of your own model on your own arrays: class-incremental, EWC and DER++.

python examples/own_model_continual.py [--small]
"""

from _user_data import SMALL, SmallCNN, user_arrays

import obliviate.api as ob

x, y, ids = user_arrays()  # your arrays and your ids (1000, 1010, ...)
train, test = ob.dataset(x, y, ids=ids)  # stratified 80/20 split, standardised; ids kept
stream = ob.stream(train, test, "class-incremental", n_experiences=5, seed=0)

n_epochs = 1 if SMALL else 5
for strategy, params in (
    ("ewc", {"reg_strength": 30.0, "n_fisher_samples": 200}),
    ("derpp", {"memory_size": 200}),
):
    result = ob.learn(
        ob.build(SmallCNN, seed=0), stream, strategy, params, n_epochs=n_epochs, lr=0.01, seed=0
    )
    print(
        f"{strategy:6s} ACC {result['acc']:.3f}  BWT {result['bwt']:+.3f}  "
        f"forgetting {result['forgetting']:.3f}  ({result['seconds']:.1f} s)"
    )
