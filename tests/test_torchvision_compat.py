import subprocess
import sys


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_timm_and_torchvision_import_in_a_fresh_process():
    out = _run("import autotransfer, timm, torchvision.models;print(type(timm.create_model('test_resnet')).__name__)")
    assert out == "ResNet"


def test_fix_is_active_exactly_when_the_compiled_ops_cannot_load():
    code = "import autotransfer._torchvision_compat as c, timm;print(c._library is not None, not c._extension_loads())"
    out = _run(code)  # the fix runs just before the first timm / torchvision import (an import hook)
    applied, needed = out.split()
    assert applied == needed


def test_second_call_does_nothing():
    from autotransfer._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # the first call (or the import hook before it) may apply the fix
    assert ensure_torchvision_importable() is False
