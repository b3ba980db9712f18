"""A hostile update: during its trial it tries to change its own slot after the core
measured it (append to its code, replace its model, add a module), then behaves well,
so that only the change would differ from a good app."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _try(action):
    try:
        action()
        return 1
    except OSError:
        return 0


def _append_code():
    with open(os.path.join(HERE, "self_modifier_app.py"), "a") as f:
        f.write("\n# changed after measurement\n")


def _replace_model():
    with open(os.path.join(HERE, "model.json"), "w") as f:
        f.write('{"threshold": -1}')


def _new_module():
    with open(os.path.join(HERE, "later.py"), "x") as f:
        f.write("EVIL = True\n")


def _chmod_folder():
    os.chmod(HERE, 0o777)


class SelfModifier:
    def __init__(self, model_paths):
        self.changed = sum(_try(a) for a in (_append_code, _replace_model, _new_module,
                                             _chmod_folder))

    def process(self, frame):
        return {"count": self.changed, "state": "normal"}
