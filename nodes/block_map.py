"""SSAEBlockMap: which joint block carries which concept, on any SD3 / SD3.5 model, as a heat map."""
from __future__ import annotations

import fnmatch
import os

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from ssae import SSAE
from ssae.block_map import (
    MOVEMENT,
    MOVEMENT_TITLE,
    TOWARD,
    TOWARD_TITLE,
    best_sites,
    category_swaps,
    heat_map,
    save_map,
    site_order,
    site_readings,
    swapped_prompt,
)
from ssae.concepts import read_context
from ssae.errors import SSAEError
from ssae.paths import inside

from .common import CATEGORY, node_errors, show_notes
from .concepts import SSAEConcepts
from .patch import patched_model


def map_ssaes(pattern: str) -> tuple[dict[str, tuple[str, SSAE]], list[str]]:
    """site -> (file, SSAE) of the block-site SSAEs in models/ssae whose names match `pattern`, and notes on the
    files left out (conditioning SSAEs)."""
    names = folder_paths.get_filename_list("ssae")
    chosen = [n for n in names if fnmatch.fnmatch(n, pattern.strip() or "*")]
    if not chosen:
        raise SSAEError(f"no SSAE in models/ssae matches {pattern!r} (there: {', '.join(names) or 'none'}): give a "
                        "pattern such as 'portraits_joint_blocks_*', or train one SSAE per block site first")
    sites: dict[str, tuple[str, SSAE]] = {}
    notes = []
    for name in chosen:
        ssae = SSAE.load(folder_paths.get_full_path("ssae", name))
        if ssae.site == "conditioning":
            notes.append(f"{name} was trained on the conditioning, not a block: left out of the map")
            continue
        if ssae.site in sites:
            raise SSAEError(f"{sites[ssae.site][0]} and {name} were both trained at {ssae.site}: make the pattern "
                            "match one SSAE per site")
        first = next(iter(sites.values()), None)
        if first is not None and first[1].vocabulary.categories != ssae.vocabulary.categories:
            raise SSAEError(f"{first[0]} and {name} have different vocabularies: map SSAEs trained on one prompt set")
        sites[ssae.site] = (name, ssae)
    if not sites:
        raise SSAEError(f"the SSAEs matching {pattern!r} were all trained on the conditioning: a map needs SSAEs "
                        "trained at block sites (SSAE Capture Features)")
    return dict(sorted(sites.items(), key=lambda kv: site_order(kv[0]))), notes


class SSAEBlockMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSAEBlockMap", display_name="SSAE Block Map", category=CATEGORY, is_output_node=True,
            description="Which joint block carries which concept, on any SD3 / SD3.5 model. Samples the prompt once "
                        "as it is (the strength-0 reference) and once per block-site SSAE and concept swap, each "
                        "edit made by SSAE Patch Model's default. With the text encoder connected, also samples "
                        "each edited prompt and shows how far each edit goes toward it (1: all the way, 0: not at "
                        "all); without, how far each edit moves the sample. Blocks x categories; writes the table "
                        "(JSON) and the heat map (PNG) to the output folder.",
            inputs=[
                io.Model.Input("model", tooltip="The SD3 / SD3.5 model to map; it is not changed."),
                io.Conditioning.Input("positive", tooltip="The prompt whose concepts are swapped."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Latent.Input("latent_image", tooltip="The latent to sample (one image keeps the map quick)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=False,
                             tooltip="Noise seed, the same for every sample of the map."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps per sample."),
                io.Float.Input("cfg", default=4.5, min=0.0, max=100.0, step=0.1, tooltip="Classifier-free guidance."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="The scheduler."),
                io.String.Input("ssae_files", default="*",
                                tooltip="Which SSAEs of models/ssae to map, as a pattern of file names (e.g. "
                                        "'portraits_joint_blocks_*'): one per block site, all from one prompt set. "
                                        "Conditioning SSAEs are left out."),
                io.String.Input("context", multiline=True, default="",
                                tooltip="The positive prompt itself (or its concepts): the concepts it names are "
                                        "swapped, each for the next ones of its category. Written as the prompt, "
                                        "each swap's edited prompt is the target the edits are read against."),
                io.Int.Input("swaps_per_category", default=1, min=1, max=16,
                             tooltip="Swaps per category; each is one sample per site."),
                io.Float.Input("strength", default=1.0, min=-20.0, max=20.0, step=0.05,
                               tooltip="The edit's strength, as in SSAE Patch Model."),
                io.String.Input("filename_prefix", default="ssae_block_map",
                                tooltip="Name of the table and heat map written to the output folder."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder of the positive prompt: each swap's edited prompt (the "
                                      "context with the phrase replaced) is sampled as the target an edit should "
                                      "reach. Without it, the map reads only how far an edit moves the sample, "
                                      "which cannot tell an edit that lands from one that breaks the image."),
            ],
            outputs=[io.Image.Output(display_name="heat map"),
                     io.Latent.Output(display_name="edited",
                                      tooltip="Every edited sample, site by site and swap by swap (the table's "
                                              "order), then the reference: decode them to look.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image: dict, seed: int, steps: int, cfg: float,
                sampler_name: str, scheduler: str, ssae_files: str, context: str, swaps_per_category: int,
                strength: float, filename_prefix: str, clip=None) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        with node_errors():
            if not context.strip():
                raise SSAEError("the map needs the context: the positive prompt (or its concepts), to know which "
                                "concepts to swap")
            ssaes, notes = map_ssaes(ssae_files)
            vocab = next(iter(ssaes.values()))[1].vocabulary
            concepts, context_notes = read_context(vocab, context)
            notes += context_notes
            untrained = set().union(*(ssae.untrained for _, ssae in ssaes.values()))
            swaps, swap_notes = category_swaps(vocab, concepts, swaps_per_category, untrained)
            notes += swap_notes
            latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
            noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
            prompts = [swapped_prompt(context, s) for s in swaps] if clip is not None else [None] * len(swaps)
            n_samples = 1 + sum(text is not None for text in prompts) + len(ssaes) * len(swaps)
            bar = comfy.utils.ProgressBar(n_samples, node_id=node_id)

            def sample(m, cond=positive) -> torch.Tensor:
                comfy.model_management.throw_exception_if_processing_interrupted()
                out = comfy.sample.sample(m, noise, steps, cfg, sampler_name, scheduler, cond, negative, latent,
                                          denoise=1.0, disable_pbar=True, seed=seed)
                bar.update(1)
                return out.cpu()

            reference = sample(model)
            targets = [None if text is None else sample(model, clip.encode_from_tokens_scheduled(clip.tokenize(text)))
                       for text in prompts]
            unaimed = [s.old for s, text in zip(swaps, prompts) if text is None]
            if clip is not None and unaimed:
                notes.append(f"the context does not hold {', '.join(unaimed)} word for word, so those swaps have no "
                             "edited prompt to aim at: write the prompt itself in the context")
            edited = {site: [sample(patched_model(model, SSAEConcepts(ssae, s.choice), strength, context=context)[0])
                             for s in swaps] for site, (_, ssae) in ssaes.items()}
            report = {"sites": {site: site_readings(swaps, reference, e, targets) for site, e in edited.items()},
                      "categories": list(vocab.categories), "cases": len(swaps), "swaps": [vars(s) for s in swaps],
                      "files": {site: name for site, (name, _) in ssaes.items()},
                      "settings": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name,
                                   "scheduler": scheduler, "strength": strength, "context": context},
                      "measure": {MOVEMENT: "||edited - reference|| / ||reference|| of the sampled latents",
                                  TOWARD: "1 - ||edited - target|| / ||reference - target||, target: the edited "
                                          "prompt sampled from the same noise"}}
            reading = TOWARD if any(t is not None for t in targets) else MOVEMENT
            image = (heat_map(report, TOWARD, TOWARD_TITLE, vmax=1.0) if reading == TOWARD else
                     heat_map(report, MOVEMENT, MOVEMENT_TITLE, vmax=None))
            output = folder_paths.get_output_directory()
            base = inside(output, filename_prefix)
            save_map(report, image, base)
        best = best_sites(report, reading)
        text = (f"mapped {len(ssaes)} sites x {len(swaps)} swaps ({n_samples} samples); "
                f"{'goes furthest toward the edited prompt' if reading == TOWARD else 'moves the sample most'}:\n" +
                "\n".join(f"{c}: {site} ({report['sites'][site][reading][c]:.3f})" for c, site in best.items()) +
                f"\nwrote {os.path.basename(base)}.json and .png")
        folder = os.path.relpath(os.path.dirname(base), os.path.realpath(output))
        shown = {"filename": os.path.basename(base) + ".png", "subfolder": "" if folder == "." else folder,
                 "type": "output"}  # the heat map on the node, as Save Image shows its images
        out = dict(latent_image, samples=torch.cat([x for e in edited.values() for x in e] + [reference]))
        out.pop("batch_index", None)
        return io.NodeOutput(torch.from_numpy(image.astype(np.float32) / 255.0)[None], out,
                             ui=show_notes(text, notes).as_dict() | {"images": [shown]})
