"""transformers' Trainer with a training-only batch collator (MixUp/CutMix mixes the training
batches; evaluation batches are stacked as they are) and the soft-target loss."""

from __future__ import annotations

from transformers import Trainer
from transformers.data.data_collator import default_data_collator

from .augment import soft_target_cross_entropy


def soft_target_loss(label_smoothing: float = 0.0):
    """A `compute_loss_func` for Trainer: cross-entropy against soft targets, or against integer
    labels with `label_smoothing` (timm's SoftTargetCrossEntropy / LabelSmoothingCrossEntropy)."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return soft_target_cross_entropy(logits, labels, label_smoothing)

    return loss


class AugmentedTrainer(Trainer):
    """`Trainer` whose `data_collator` serves the training batches only; evaluation and
    prediction use `eval_data_collator` (default: transformers' default collator).

    `optimizer_factory(model)` / `scheduler_factory(optimizer)` build the optimizer and schedule
    once the Trainer has wrapped the model (FSDP refuses ready-made `optimizers`)."""

    def __init__(self, *args, eval_data_collator=None, optimizer_factory=None, scheduler_factory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator or default_data_collator
        self.optimizer_factory, self.scheduler_factory = optimizer_factory, scheduler_factory

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.optimizer_factory is not None:
            self.optimizer = self.optimizer_factory(self.model if model is None else model)
            return self.optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.scheduler_factory is not None:
            self.lr_scheduler = self.scheduler_factory(self.optimizer if optimizer is None else optimizer)
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def _with_eval_collator(self, make, *args, **kwargs):
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return make(*args, **kwargs)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)
