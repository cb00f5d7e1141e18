"""Named training recipes (`build.py train --recipe NAME|PATH.json`): the flags that reproduce a shipped
checkpoint, as data. Flags given on the command line win over the recipe's."""
import os

from compile.errors import UserError
from runtime.schema import load_json

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("arch", "groups", "group_widths", "epochs", "own_loss_weight", "combine", "teacher", "teacher_weight",
        "teacher_temp", "teacher_epochs", "holdout")


def names():
    return sorted(n[:-5] for n in os.listdir(HERE) if n.endswith(".json"))


def load_recipe(name):
    path = name if name.endswith(".json") else os.path.join(HERE, name + ".json")
    if not os.path.isfile(path):
        raise UserError("--recipe %s: no such recipe; use one of %s or a JSON file" % (name, ", ".join(names())))
    doc = load_json(path, "fix the recipe file", UserError)
    bad = sorted(set(doc) - set(KEYS) - {"description"}) if isinstance(doc, dict) else ["(not an object)"]
    if bad:
        raise UserError("recipe %s: unknown keys %s; a recipe sets %s" % (path, ", ".join(bad), ", ".join(KEYS)))
    out = {k: doc[k] for k in KEYS if k in doc}
    if isinstance(out.get("teacher"), str) and not os.path.isabs(out["teacher"]):
        # a recipe's teacher is a path beside the recipe, so the recipe trains the same from any directory
        out["teacher"] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), out["teacher"]))
    return out


def merge(recipe, flags, scheme):
    """The training settings: the recipe's values under the flags given (None = not given). A recipe's
    per-group lists (widths, epochs) belong to its group count, so another --groups drops them; a static
    baseline takes the recipe's widths and epochs but has no combination or own loss."""
    out = {k: v for k, v in recipe.items()}
    if flags.get("groups") is not None and flags["groups"] != recipe.get("groups"):
        for k in ("group_widths", "epochs"):
            if isinstance(out.get(k), str) and "," in out[k]:
                out.pop(k)
    if scheme == "static":
        out.pop("combine", None)
        out.pop("own_loss_weight", None)
        for k in ("teacher", "teacher_weight", "teacher_temp", "teacher_epochs"):
            out.pop(k, None)  # static baselines train from scratch, teacherless; one takes --teacher if asked
    widths = set(str(out.get("group_widths", "1")).split(","))
    if scheme == "dense" and flags.get("group_widths") is None and len(widths) > 1:
        raise UserError("the dense baseline has equal groups only, and this recipe's are %s; pass --recipe paper "
                        "or --group-widths" % out["group_widths"])
    if flags.get("teacher") is not None or flags.get("teacher_epochs") is not None:
        out.pop("teacher", None)  # a teacher given on the command line replaces the recipe's
        out.pop("teacher_epochs", None)
    out.update({k: v for k, v in flags.items() if v is not None})
    if str(out.get("teacher")).lower() == "none":  # --teacher none: train without the recipe's teacher
        for k in ("teacher", "teacher_weight", "teacher_temp"):
            out.pop(k, None)
    return out
