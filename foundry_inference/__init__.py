"""foundry-inference: deploy and serve AI models behind the Foundry inference API.

The repository's top-level folders operator/, apps/ and auth/ are installed as foundry_inference.operator, .apps and
.auth (setup.cfg's package_dir). operator/ has no __init__.py on purpose: with one, `python -m ...` run from the
repository root (where the working directory leads sys.path) would import it in place of the standard library's
`operator` module, and pip, pytest and this CLI would crash before they start. It is a namespace package instead; an
editable install's finder cannot resolve a namespace subpackage mapped to another folder, so in a source checkout this
package's path also names the checkout, where `operator/` is found (a built wheel has it under this folder already).
"""
import os as _os

__version__ = "0.1.0"

_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(__path__[0], "operator"))
        and _os.path.isfile(_os.path.join(_checkout, "operator", "main.py"))):
    __path__.append(_checkout)
