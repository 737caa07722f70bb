"""The clean-image predictions recorded by lab/diagnostics/first_step_divergence.py (a diagnostic of the fixture's
development) against diffusers' own DDIM step: its ``pred_original_sample`` for the guided noise of the source and
target rows, from the UNet's inputs and outputs captured separately."""

import torch


def _script():
    from lab.diagnostics import first_step_divergence

    return first_step_divergence


def test_recorded_x0_is_the_ddim_schedulers_clean_image_prediction(tiny_pipe64):
    from freeprompt.diffusion import ddim_scheduler
    from freeprompt.editing.generated import edit

    unet, guidance, steps = tiny_pipe64.unet, 3.0, 3
    calls = []
    capture = unet.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((args[0].clone(), args[1], out[0].clone())), with_kwargs=True)
    scheduler = ddim_scheduler(tiny_pipe64.scheduler.config)
    recorder = _script().CleanImagePredictions(unet, scheduler.alphas_cumprod, guidance)
    try:
        edit(tiny_pipe64, "a red circle", ["a blue circle"], seed=3, steps=steps, guidance=guidance, progress=False,
             decode=False)
    finally:
        recorder.close()
        capture.remove()
    assert len(recorder.x0) == len(calls) == steps
    scheduler.set_timesteps(steps)
    for x0, (latents, t, noise) in zip(recorder.x0, calls):
        uncond, cond = noise.chunk(2)
        expected = scheduler.step(uncond + guidance * (cond - uncond), t, latents.chunk(2)[0]).pred_original_sample
        assert x0.shape == (2, *latents.shape[1:])  # rows: source, target
        torch.testing.assert_close(x0, expected, atol=1e-5, rtol=1e-5)
    # the recorder is detached: a further UNet call records nothing
    with torch.no_grad():
        latents, t, _ = calls[0]
        context = torch.zeros(latents.shape[0], 77, unet.config.cross_attention_dim, dtype=latents.dtype)
        unet(latents, t, encoder_hidden_states=context)
    assert len(recorder.x0) == steps
