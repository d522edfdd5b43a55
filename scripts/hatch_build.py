"""Hatch build hook: ship ``dft_mm_hook.pth`` at the root of site-packages.

The .pth file activates the LLaMA-Factory patch in every Python process (torchrun children
included). Editable installs need it too, so it is added to both wheel kinds.
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})["dft_mm/llamafactory/dft_mm_hook.pth"] = "dft_mm_hook.pth"
