"""Stand-in `comfy.samplers`: the sampler and scheduler names a sampling node offers (a few of ComfyUI 0.3.64's)."""


class KSampler:
    SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "uni_pc"]
    SCHEDULERS = ["simple", "sgm_uniform", "normal", "karras", "beta"]
