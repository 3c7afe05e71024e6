"""service/outer.py: relative redirects and the paths an application serves (the live layer: test_frontdoor)."""
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service import outer


async def page(request):
    return PlainTextResponse("page")


@pytest.mark.parametrize("location, expected", [(b"http://evil.example/a?b=1", b"/a?b=1"), (b"//evil.example/a", b"/"),
                                                (b"/docs", b"/docs"), (b"https://x", b"/")])
def test_relative(location, expected):
    assert outer.relative(location) == expected


def test_static_files_are_known_one_by_one_not_by_their_prefix(tmp_path):

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.css").write_text("x")
    (tmp_path / "sub" / "b.js").write_text("y")
    app = Starlette(routes=[Route("/", page), Mount("/assets", StaticFiles(directory=tmp_path))])
    assert outer.route_paths(app) == (frozenset({"/", "/assets/a.css", "/assets/sub/b.js"}), ())


def test_an_empty_mount_is_a_prefix_and_an_app_without_a_router_knows_nothing():
    app = Starlette(routes=[Route("/a", page), Mount("/api", routes=[Route("/x", page)]), Mount("/any", app=page)])
    assert outer.route_paths(app) == (frozenset({"/a", "/api/x"}), ("/any/",))
    assert outer.route_paths(page) == (frozenset(), ())
