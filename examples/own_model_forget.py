"""Forget 50 of your own ids from your own model with SSD and SCRUB, against the retrained oracle.

python examples/own_model_forget.py [--small]
"""

from _user_data import SMALL, SmallCNN, user_arrays

import obliviate.api as ob

x, y, ids = user_arrays()
train, test = ob.dataset(x, y, ids=ids)

# how your model is built and trained: the original now, the oracle (retain set only) later
recipe = ob.recipe(SmallCNN, n_epochs=3 if SMALL else 10, lr=0.05, momentum=0.9, seed=0)
model = recipe.fit(train)

forget_ids = train.ids[:50].tolist()  # the 50 ids a deletion request names (1000, 1010, ...)
for method in ("ssd", "scrub"):
    unlearned, report = ob.forget(model, train, forget_ids, method, test=test, recipe=recipe)
    u, o = report["unlearned"], report["oracle"]
    print(
        f"{method:6s} forget acc {u['forget_acc']:.3f} (oracle {o['forget_acc']:.3f})  "
        f"test acc {u['test_acc']:.3f} (oracle {o['test_acc']:.3f})  "
        f"MIA AUC {u['mia_auc']:.3f} (oracle {o['mia_auc']:.3f})  {report['seconds']:.2f} s"
    )
