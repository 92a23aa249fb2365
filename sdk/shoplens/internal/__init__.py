"""Support code that the runtime and the converter share: not part of the user API.

* :mod:`.atomic`: writes that readers never see half-done, and the output-folder rules;
* :mod:`.quiet`: native (C++) stderr silenced around noisy imports and interpreter set-up;
* :mod:`.progress`: rich progress bars that stay off non-terminals and ``--json`` output.

It is public only so that ``shoplens_convert`` need not reach into private modules; its names may
change between releases.
"""
