"""Discovery shim: Snakemake finds software-deployment plugins by this module name.

Everything lives in ``snakemake_deploy_nixsnake.plugin``; ``EnvSpec`` must be defined in
the same module as ``Env`` and ``common_settings``, so this only re-exports.
"""

from snakemake_deploy_nixsnake.plugin import Env, EnvSpec, Settings, common_settings

__all__ = ["Env", "EnvSpec", "Settings", "common_settings"]
