"""What the timing process gets from a cell: its models saved as data, the shipped one made
again in its format (quantized, compiled or packaged anew) from what was saved."""

from pathlib import Path

import torch

from modelopt.run import rebuild, timing


def rebuilt(out, recipe: rebuild.Recipe, folder: Path):
    """Saves `out`'s models in `folder` and rebuilds its shipped model from there; returns the
    rebuilt model and the saved timing batch."""
    timing.save_all(folder, "c", 0, out.models, out.example, out.batch, out.input_shape,
                    out.num_outputs)
    model, _, batch = rebuild.load(folder / "c-0-model.pt", recipe)
    return model, batch


def timed_again(out, config, folder: Path):
    """The rebuilt model and its outputs on the timing batch."""
    model, batch = rebuilt(out, rebuild.Recipe.of(config), folder)
    with torch.inference_mode():
        return model, model(batch)
