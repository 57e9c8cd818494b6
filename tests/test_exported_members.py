import hostwire


def test_public_api_is_sorted_and_complete() -> None:
    assert hostwire.__all__ == sorted(hostwire.__all__)
    public = {name for name in dir(hostwire) if not name.startswith("_")}
    assert public - {"cli", "testing"} == set(hostwire.__all__)  # submodules
