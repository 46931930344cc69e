"""Pure-PyTorch attacks with one call shape, `attack(model, x, y, **params) -> x_adv`, images in
[0, 1]; the official AutoAttack components through `pyautoattack`. Never imports Ray."""
from attacks.autoattack import autoattack
from attacks.cw import cw_inf
from attacks.early_stop import early_stopped_pgd
from attacks.fgsm import fgsm
from attacks.kl_pgd import kl_pgd
from attacks.pgd import AttackModeError, pgd, require_eval_mode
from attacks.registry import ATTACKS, AttackSpec, run_attack

__all__ = ["ATTACKS", "AttackModeError", "AttackSpec", "autoattack", "cw_inf", "early_stopped_pgd",
           "fgsm", "kl_pgd", "pgd", "require_eval_mode", "run_attack"]
