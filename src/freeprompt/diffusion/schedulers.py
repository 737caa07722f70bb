"""The samplers an edit can run on: any of diffusers' schedulers, driven by the one loop in ``sampler.py`` with the
one step rule. Names and checks import no torch (the command line reads them before parsing anything heavy).

    ddim      DDIM with the official FPE code's settings (deterministic; the only one that inverts a photo)
    dpm++2m   DPM-Solver++ (2M), deterministic
    unipc     UniPC, deterministic
    euler     Euler (Karras et al.'s ODE sampler), deterministic
    euler-a   Euler ancestral: fresh noise every step
    lcm       Latent Consistency Model multi-step sampling: fresh noise every step; needs an LCM-distilled model
              (an LCM checkpoint or LoRA), 2-8 steps, guidance 1-2
    tcd       Trajectory Consistency Distillation sampling (gamma 0.3): needs a TCD-distilled model, 2-8 steps
    flow      flow-matching Euler, the sampler of the flow-matching transformers (SD3, FLUX.1), with their shift;
              the only one they run, and the default on them (``default_scheduler``)

Samplers that draw noise every step draw it once per step for all prompts of a batch (``sampler.SharedNoise``): the
source and its targets must walk the same path for an edit to keep the source's structure.
"""

from __future__ import annotations

from ..errors import BadInput

SCHEDULERS = ("ddim", "dpm++2m", "unipc", "euler", "euler-a", "lcm", "tcd", "flow")
FLOW = ("flow",)  # the samplers of a flow-matching model (its scheduler config names a FlowMatch class)
INVERTIBLE = ("ddim", "flow")  # the schedulers a photo can be inverted with (the inversions walk them backwards)
DISTILLED = ("lcm", "tcd")  # samplers meant for a few-step distilled model


def check_scheduler(name: str, inverting: bool = False) -> str:
    """``name`` in lower case if it is a known scheduler (and, for a photo's edit, one that inverts)."""
    chosen = str(name).strip().lower()
    if chosen not in SCHEDULERS:
        raise BadInput(f"unknown scheduler {name!r}", f"use one of {', '.join(SCHEDULERS)}")
    if inverting and chosen not in INVERTIBLE:
        raise BadInput(f"a photo cannot be inverted with the {chosen} scheduler",
                       f"use --scheduler {' or '.join(INVERTIBLE)} with --image")
    return chosen


SOLVERS = ("euler", "midpoint")  # how a flow-matching model's ODE is integrated when a photo is inverted


def check_solver(solver: str, flow: bool) -> str:
    """``solver`` if it is known and fits the model (a noise-prediction model inverts with DDIM, first order)."""
    if solver not in SOLVERS:
        raise BadInput(f"unknown inversion solver {solver!r}", f"use one of {', '.join(SOLVERS)}")
    if solver != "euler" and not flow:
        raise BadInput(f"the {solver} solver inverts flow-matching models (SD3, FLUX.1); this model inverts with DDIM",
                       "drop --inversion-solver, or use an SD3 or FLUX.1 model")
    return solver


def is_flow(model_config) -> bool:
    """Whether a model's scheduler config is a flow-matching one (SD3, FLUX.1): it names a FlowMatch class, or it has
    a shift and no noise (beta) schedule."""
    config = dict(model_config or {})
    named = str(config.get("_class_name", ""))
    return named.startswith("FlowMatch") or (not named and "shift" in config and "beta_schedule" not in config)


def default_scheduler(model_config) -> str:
    """The sampler an edit runs when none is named: ddim (the official FPE code's), flow on a flow-matching model."""
    return "flow" if is_flow(model_config) else "ddim"


def make_scheduler(name: str, model_config=None, model_betas: bool = False):
    """A fresh diffusers scheduler ``name`` built from the model's own scheduler config (its betas, prediction type,
    training length; a flow-matching model's shift); DDIM with the official FPE code's settings (Stable Diffusion's
    betas, unless ``model_betas``: a diffusion transformer trained on its own)."""
    import diffusers

    from .sampler import ddim_scheduler

    chosen = check_scheduler(name)
    if is_flow(model_config) != (chosen in FLOW):
        family = "a flow-matching model (SD3, FLUX.1)" if is_flow(model_config) else "a noise-prediction model"
        fits = FLOW if is_flow(model_config) else tuple(s for s in SCHEDULERS if s not in FLOW)
        raise BadInput(f"the {chosen} scheduler cannot sample {family}", f"use --scheduler {' or '.join(fits)}")
    if chosen == "flow":
        return diffusers.FlowMatchEulerDiscreteScheduler.from_config(dict(model_config))
    if chosen == "ddim":
        return ddim_scheduler(model_config, model_betas)
    config = dict(model_config or {})
    classes = {"dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
               "unipc": ("UniPCMultistepScheduler", {}), "euler": ("EulerDiscreteScheduler", {}),
               "euler-a": ("EulerAncestralDiscreteScheduler", {}), "lcm": ("LCMScheduler", {}),
               "tcd": ("TCDScheduler", {})}
    cls, extra = classes[chosen]
    return getattr(diffusers, cls).from_config(config, **extra)


def scheduler_name(scheduler) -> str:
    """The name ``make_scheduler`` knows a scheduler object by, or its class name."""
    known = {"DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm++2m", "UniPCMultistepScheduler": "unipc",
             "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-a",
             "LCMScheduler": "lcm", "TCDScheduler": "tcd", "FlowMatchEulerDiscreteScheduler": "flow"}
    return known.get(type(scheduler).__name__, type(scheduler).__name__)
