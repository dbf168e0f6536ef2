"""Experiments: the ResNet paper results, rerun small on tinyres. Each module exposes
`run(quick=False, seed=0, out_dir=None) -> dict` which prints a table, saves a PNG
figure into out_dir (default runs/experiments) and returns the numbers with the 'table'.

    python -m tinyres experiment degradation --quick
    from tinyres.experiments import run
    result = run("lesion", quick=True)

    degradation          plain vs residual twins at two depths (He et al. 2015, Fig. 1, 6)
    shortcut-scale       the lambda^k law of a scaled shortcut (He et al. 2016, eq. 7-8)
    shattered-gradients  dy/dx of deep plain nets vs resnets (Balduzzi et al. 2017)
    lesion               deleting single blocks at test time (Veit et al. 2016)
    identity-mappings    shortcut variants and pre-activation (He et al. 2016, Tables 1-2)
"""
from tinyres.experiments import (degradation, identity_mappings, lesion, shattered,
                                 shortcut_scale)

EXPERIMENTS = {
    "degradation": degradation,
    "shortcut-scale": shortcut_scale,
    "shattered-gradients": shattered,
    "lesion": lesion,
    "identity-mappings": identity_mappings,
}


def run(name, quick=False, seed=0, out_dir=None):
    """Run experiment `name` (a key of EXPERIMENTS); its result dict."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name].run(quick=quick, seed=seed, out_dir=out_dir)


__all__ = ["EXPERIMENTS", "degradation", "identity_mappings", "lesion", "run", "shattered",
           "shortcut_scale"]
