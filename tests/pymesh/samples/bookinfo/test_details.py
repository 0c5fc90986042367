from __future__ import annotations

from aiohttp import web

from pymesh.samples.bookinfo import details
from pymesh.samples.bookinfo.constants import BOOKS_API_ISBN


async def test_v1_record(mesh, client):
    url = await mesh.add("details:9080", details.make_app(details.DetailsConfig(), {}))
    async with client.get(url + "/details/3") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "id": 3,
            "author": "William Shakespeare",
            "year": 1595,
            "type": "paperback",
            "pages": 200,
            "publisher": "PublisherA",
            "language": "English",
            "ISBN-10": "1234567890",
            "ISBN-13": "123-1234567890",
        }
    async with client.get(url + "/details/x") as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "please provide numeric product id"}
    async with client.get(url + "/health") as resp:
        assert await resp.json() == {"status": "Details is healthy"}


async def _books_api(request: web.Request) -> web.Response:
    assert request.query["q"] == f"isbn:{BOOKS_API_ISBN}"
    volume = {
        "authors": ["William Shakespeare"],
        "publishedDate": "2002-02-05",
        "printType": "BOOK",
        "pageCount": 80,
        "publisher": "Dover",
        "language": "en",
        "industryIdentifiers": [
            {"type": "ISBN_13", "identifier": "9780486424613"},
            {"type": "ISBN_10", "identifier": "0486424618"},
        ],
    }
    return web.json_response({"items": [{"volumeInfo": volume}]})


async def test_v2_asks_the_book_service_through_the_sidecar(mesh, client):
    books = web.Application()
    books.router.add_get("/books/v1/volumes", _books_api)
    await mesh.add("www.googleapis.com", books)
    config = details.DetailsConfig.from_env("v2", {"DO_NOT_ENCRYPT": "true"})
    url = await mesh.add("details:9080", details.make_app(config, mesh.env))
    async with client.get(url + "/details/0", headers={"x-request-id": "r"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {
        "id": 0,
        "author": "William Shakespeare",
        "year": "2002-02-05",
        "type": "paperback",
        "pages": 80,
        "publisher": "Dover",
        "language": "English",
        "ISBN-10": "0486424618",
        "ISBN-13": "9780486424613",
    }
    seen = mesh.proxy.to("www.googleapis.com")[0]
    assert seen.target.startswith("http://www.googleapis.com/books/v1/volumes?q=isbn:")
    assert seen.headers["x-request-id"] == "r"


async def test_v2_without_egress_answers_400(mesh, client):
    config = details.DetailsConfig.from_env(
        "v1", {"ENABLE_EXTERNAL_BOOK_SERVICE": "true", "DO_NOT_ENCRYPT": "true"}
    )
    url = await mesh.add("details:9080", details.make_app(config, mesh.env))
    async with client.get(url + "/details/0") as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
