"""Learning without Forgetting: distil the previous model's outputs on the new data."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.continual.penalties import distillation_loss
from obliviate.data.scenarios import Experience
from obliviate.models.base import logits


class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem, 2017).

    After each experience the model is frozen as the teacher. On the next experiences the loss is
    (Li & Hoiem, eq. 1-2, with their loss balance ``lambda_o`` as ``reg_strength``)

    ``L = CE(y, student) + reg_strength * sum_g KD_T(student[:, g], teacher[:, g])``

    where ``KD_T`` is the soft-target cross-entropy at temperature ``T``
    (:func:`~obliviate.continual.penalties.distillation_loss`) and ``g`` runs over groups of
    output columns:

    - task-aware streams (multi-head models): one group per distinct old task, its head's
      classes, so each old head is distilled once, with its own softmax (Li & Hoiem's original
      setting). On a recurring stream a task seen several times is still one group (in order of
      first appearance), and it stays a group while it is the current task again (its head was
      learned before: it is an old task too);
    - single-head streams (class- or domain-incremental): one group holding every class seen in
      the past experiences, i.e. the old classes' logits are distilled (the class-incremental
      adaptation used by Rebuffi et al., 2017, sec. 2.3, and van de Ven et al., 2022).

    Parameters
    ----------
    reg_strength : float, >= 0
        ``lambda_o``, the weight of the distillation term (paper: 1). ``0`` is fine-tuning.
    temperature : float, > 0
        ``T`` of the distillation softmax (paper: 2).

    Notes
    -----
    - No warm-up stage: Li & Hoiem first train only the new head, then everything; here all
      parameters are trained from the first step.
    - Teacher outputs are computed on the fly from a frozen copy of the model (the paper records
      them once before training; identical for a deterministic model without augmentation).
    - The distillation term is not multiplied by ``T^2``; it uses the teacher of the *latest*
      experience for all old classes (as the paper does in the multi-task sequence).
    - The new-task term is plain cross-entropy over all outputs (as naive fine-tuning).

    References
    ----------
    Li, Z. & Hoiem, D. (2017). Learning without Forgetting. IEEE TPAMI 40(12), 2935-2947.
    Rebuffi, S.-A. et al. (2017). iCaRL: Incremental classifier and representation learning. CVPR.
    van de Ven, G. M., Tuytelaars, T. & Tolias, A. S. (2022). Three types of incremental learning.
    Nature Machine Intelligence 4, 1185-1197.
    """

    needs_task_boundaries: ClassVar[bool] = True
    neutral_params: ClassVar[Mapping[str, Any]] = {"reg_strength": 0.0}
    learned_state: ClassVar[tuple[str, ...]] = ("teacher_", "groups_")
    teacher_: nn.Module | None = None
    groups_: list[tuple[int, ...]] | None = None

    def __init__(self, *, reg_strength: float = 1.0, temperature: float = 2.0) -> None:
        check_number("reg_strength", reg_strength, low=0, owner="LwF")
        check_number("temperature", temperature, low=0, low_open=True, owner="LwF")
        self.reg_strength = reg_strength
        self.temperature = temperature

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        teacher, groups = self.teacher_, self.groups_
        if self.reg_strength == 0 or teacher is None or groups is None:
            return cross_entropy(model, batch)
        out = logits(model, batch.x, batch.task)
        loss = nn.functional.cross_entropy(out, batch.y)
        # multi-head models: evaluate every head (task=None) to read the old heads' outputs
        student_out = out if batch.task is None else logits(model, batch.x, None)
        with torch.no_grad():
            teacher_out = logits(teacher, batch.x, None)
        for group in groups:
            cols = torch.tensor(group, device=student_out.device)
            kd = distillation_loss(student_out[:, cols], teacher_out[:, cols], self.temperature)
            loss = loss + self.reg_strength * kd
        return loss

    def end(self, model: nn.Module, experience: Experience) -> None:
        groups: list[tuple[int, ...]] = list(self.groups_ or [])
        if experience.task_id is not None:
            # one group per distinct old task: a task that recurs (recurring streams) is
            # distilled once, not once per occurrence
            if tuple(experience.classes) not in groups:
                groups.append(tuple(experience.classes))
        else:
            seen = set(groups[0]) if groups else set()
            groups = [tuple(sorted(seen | set(experience.classes)))]
        teacher = copy.deepcopy(model)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher_ = teacher
        self.groups_ = groups
