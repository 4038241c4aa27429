"""Midjourney through the real gateway process, a real fake midjourney-proxy and the openai SDK."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import GatewayFactory
from tests.mj_util import (
    client,
    image_of,
    imagine_ids,
    mj_server,
    new_key,
    solid,
    start_gateway,
    submit_async,
    submitted_prompts,
    wait_task,
)
from tests.upstreams import fake_mj
from tests.waits import wait_until


def test_n1_is_the_grids_first_quadrant_and_params_reach_the_prompt(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(secret=key) as (srv, state):
        gw = start_gateway(gateway, srv, key)
        res = client(gw).images.generate(model="mj-v7", prompt="a red  fox", size="1536x1024", quality="hd",
                                         style="natural")
        gw.remember(res.model_dump_json())
        assert res.data and len(res.data) == 1 and res.data[0].b64_json
        (tid,) = imagine_ids(state)
        img = image_of(res.data[0].b64_json)
        assert img.size == (128, 128)
        assert solid(img) == fake_mj.quadrant_colors(tid)[0]
        assert submitted_prompts(state) == ["a red fox --ar 3:2 --q 2 --style raw --v 7"]
        assert res.data[0].revised_prompt == "a red fox --ar 3:2 --q 2 --style raw --v 7"
        sub = next(r for r in state.requests if r.path.endswith("/submit/imagine"))
        assert sub.headers["mj-api-secret"] == key
        assert state.submits == 1
        gw.assert_secret_absent(key)


def test_n4_gives_the_four_distinct_quadrants_in_order(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, key)
        res = client(gw).images.generate(model="niji-6", prompt="koi pond", n=4)
        (tid,) = imagine_ids(state)
        colors = [solid(image_of(d.b64_json or "")) for d in res.data or []]
        assert colors == fake_mj.quadrant_colors(tid) and len(set(colors)) == 4
        assert submitted_prompts(state) == ["koi pond --niji 6"]
        gw.remember(res.model_dump_json())
        gw.assert_secret_absent(key)


def test_n6_runs_two_imagines_in_parallel(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, key)
        res = client(gw).images.generate(model="mj-v6", prompt="lanterns", n=6)
        ids = imagine_ids(state)
        assert state.submits == 2 and len(ids) == 2
        colors = [solid(image_of(d.b64_json or "")) for d in res.data or []]
        assert len(colors) == 6
        first, second = (ids if colors[0] == fake_mj.quadrant_colors(ids[0])[0] else ids[::-1])
        assert colors == fake_mj.quadrant_colors(first) + fake_mj.quadrant_colors(second)[:2]
        starts = sorted(t.submit_ms for t in state.tasks.values())
        assert starts[1] - starts[0] < 500  # submitted together, not one after the other
        gw.remember(res.model_dump_json())
        gw.assert_secret_absent(key)


def test_prompt_parameters_win_and_any_size_maps_to_a_ratio(gateway: GatewayFactory) -> None:
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        c = client(gw)
        c.images.generate(model="mj-v7", prompt="a fox --ar 16:9 --niji 5", size="1024x1536")
        c.images.generate(model="mj-v5", prompt="a wide shot", size="1000x333", quality="low", style="vivid")
        assert submitted_prompts(state) == ["a fox --ar 16:9 --niji 5", "a wide shot --ar 1000:333 --v 5.2"]


def test_stream_partial_images_then_completed(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(progress_steps=[10, 25, 40, 55, 70, 85]) as (srv, state):
        gw = start_gateway(gateway, srv, key)
        stream = client(gw).images.generate(model="mj-v7", prompt="a comet", stream=True, partial_images=2)
        events = list(stream)
        kinds = [e.type for e in events]
        assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], kinds
        assert [getattr(e, "partial_image_index", None) for e in events[:2]] == [0, 1]
        previews = [image_of(e.b64_json) for e in events[:2]]
        assert all(p.size == (64, 64) and (p.getcolors(maxcolors=16) is None) for p in previews)  # blurred
        assert previews[0].tobytes() != previews[1].tobytes()  # a new preview each time
        (tid,) = imagine_ids(state)
        assert solid(image_of(events[2].b64_json)) == fake_mj.quadrant_colors(tid)[0]
        gw.assert_secret_absent(key)


def test_upscale_route_option_returns_full_resolution_upscales(gateway: GatewayFactory) -> None:
    with mj_server() as (srv, state):
        routes = "  - {name: mj-v7-hd, provider: midjourney, upstream_model: '--v 7', upscale: true}\n"
        gw = start_gateway(gateway, srv, new_key(), routes=routes)
        res = client(gw).images.generate(model="mj-v7-hd", prompt="castle", n=2, response_format="b64_json")
        (grid,) = imagine_ids(state)
        ups = sorted((t.index, t.id) for t in state.tasks.values() if t.action == "UPSCALE")
        assert [i for i, _ in ups] == [1, 2]
        imgs = [image_of(d.b64_json or "") for d in res.data or []]
        assert [i.size for i in imgs] == [(256, 256)] * 2
        assert [solid(i) for i in imgs] == [fake_mj.upscale_color(grid, 1), fake_mj.upscale_color(grid, 2)]


def test_image_urls_of_the_fork_are_used_instead_of_splitting(gateway: GatewayFactory) -> None:
    with mj_server(include_image_urls=True) as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        res = client(gw).images.generate(model="mj-v7", prompt="tiles", n=3, response_format="url")
        (tid,) = imagine_ids(state)
        # Hosted copies (the fork's URLs are on the proxy's host): the same bytes as the fork's images.
        assert all(d.url and d.url.startswith(gw.url + "/images/") for d in res.data or [])
        assert [httpx.get(d.url or "").content for d in res.data or []] == [
            httpx.get(f"{srv.url}/mj/image/{tid}/0_{i}.png").content for i in range(3)]


def test_edit_sends_reference_images_as_base64_array(gateway: GatewayFactory) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        res = client(gw).images.edit(model="mj-v7", image=("ref.png", buf.getvalue(), "image/png"),
                                     prompt="in this style")
        assert len(res.data or []) == 1
        (tid,) = imagine_ids(state)
        (ref,) = state.base64_arrays[tid]
        assert ref.startswith("data:image/png;base64,")
        assert base64.b64decode(ref.split(",", 1)[1]) == buf.getvalue()


def test_code_23_is_a_rate_limit_with_retry_after(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server() as (srv, state):
        # retries: 0, else the router waits out the Retry-After and tries again (routing/policy.py)
        gw = start_gateway(gateway, srv, key, routes="  - {name: mj-v7, retries: 0}\n")
        state.next_codes.append(23)
        with pytest.raises(openai.RateLimitError) as ei:
            client(gw).images.generate(model="mj-v7", prompt="busy")
        assert ei.value.response.headers["retry-after"].isdigit()
        assert ei.value.code == "upstream_queue_full"
        gw.remember(ei.value.response.text)
        gw.assert_secret_absent(key)


def test_code_24_names_the_banned_word(gateway: GatewayFactory) -> None:
    with mj_server(banned_words=["gore"]) as (srv, _):
        gw = start_gateway(gateway, srv, new_key())
        with pytest.raises(openai.BadRequestError) as ei:
            client(gw).images.generate(model="mj-v7", prompt="lots of GORE here")
        assert ei.value.code == "content_policy_violation"
        assert "'gore'" in ei.value.message


@pytest.mark.parametrize(("code", "status", "err_code"), [(3, 503, "upstream_unavailable"),
                                                          (4, 400, "invalid_value"), (9, 502, "upstream_error")])
def test_other_submit_codes_map_to_clear_errors(gateway: GatewayFactory, code: int, status: int,
                                                err_code: str) -> None:
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, new_key(), routes="  - {name: mj-v7, retries: 0}\n")
        state.next_codes.append(code)
        r = httpx.post(f"{gw.base_url}/images/generations", json={"model": "mj-v7", "prompt": "x"}, timeout=20)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == err_code
        assert f"code {code}" in r.json()["error"]["message"]


def test_codes_21_and_22_are_accepted_and_polled(gateway: GatewayFactory) -> None:
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        state.next_codes.extend([22, 21])
        c = client(gw)
        for _ in range(2):
            res = c.images.generate(model="mj-v7", prompt="queued")
            assert len(res.data or []) == 1
        assert state.submits == 2


def test_upstream_failure_carries_fail_reason(gateway: GatewayFactory) -> None:
    with mj_server(fail_prompts=["doomed"], fail_reason="[Invalid parameter] bad aspect") as (srv, state):
        gw = start_gateway(gateway, srv, new_key(), routes="  - {name: mj-v7, retries: 0}\n")
        with pytest.raises(openai.APIStatusError) as ei:
            client(gw).images.generate(model="mj-v7", prompt="doomed cat")
        assert ei.value.status_code == 502 and ei.value.code == "upstream_task_failed"
        assert "[Invalid parameter] bad aspect" in ei.value.message
        assert state.submits == 1


def test_deadline_gives_504_and_cancels_upstream(gateway: GatewayFactory) -> None:
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, new_key(), routes="  - {name: mj-v7, deadline_s: 1.0}\n")
        r = httpx.post(f"{gw.base_url}/images/generations", json={"model": "mj-v7", "prompt": "never"}, timeout=20)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout" and r.json()["error"]["type"] == "timeout"
        (tid,) = imagine_ids(state)
        # The upstream cancel goes out right after the answer.
        wait_until(lambda: state.status_of(tid) == "CANCEL", timeout=3, what="the upstream cancel")


def test_per_account_concurrency_queue_then_429(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, key, provider="concurrency: 1, queue_size: 1, retry_after_s: 7",
                           routes="  - {name: mj-v7, retries: 0}\n")  # else the router waits and retries
        running = submit_async(gw, {"model": "mj-v7", "prompt": "one"})
        waiting = submit_async(gw, {"model": "mj-v7", "prompt": "two"})
        wait_task(gw, running["id"], lambda t: t["status"] == "in_progress")
        assert state.submits == 1  # the second waits in the gateway's queue, not upstream
        r = httpx.post(f"{gw.base_url}/images/generations", json={"model": "mj-v7", "prompt": "three"}, timeout=10)
        assert r.status_code == 429 and r.headers["retry-after"] == "7", r.text
        httpx.delete(f"{gw.base_url}/images/tasks/{running['id']}")
        wait_task(gw, waiting["id"], lambda t: t["status"] == "in_progress")  # got the freed slot
        assert state.submits == 2
        gw.assert_secret_absent(key)


def test_auth_header_option_for_forks(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(secret=key, auth_header="authorization") as (srv, _):
        gw = start_gateway(gateway, srv, key, provider="auth_header: Authorization")
        assert len(client(gw).images.generate(model="mj-v7", prompt="x").data or []) == 1
        gw.assert_secret_absent(key)


def test_dropped_connections_poll_on_and_a_lost_submit_is_not_resent(gateway: GatewayFactory) -> None:
    with mj_server(step_s=0.5) as (srv, state):  # (slow enough that the drops below meet polls)
        gw = start_gateway(gateway, srv, new_key(), routes="  - {name: mj-v7, retries: 2}\n")
        task = submit_async(gw, {"model": "mj-v7", "prompt": "flaky"})
        wait_task(gw, task["id"], lambda t: t["status"] != "queued")
        state.drop_next_n = 3  # three polls lost on the way
        assert wait_task(gw, task["id"], lambda t: t["status"] == "succeeded")["progress"] == 100
        # A machine slow enough to see the task end first leaves drops over: they are not this test's
        # second half (a lost submit), so they go.
        state.drop_next_n = 0
        before = state.submits
        state.drop_after_accept_n = 1  # accepted upstream, answer lost: may be billed, so no resubmit
        r = httpx.post(f"{gw.base_url}/images/generations", json={"model": "mj-v7", "prompt": "lost"}, timeout=20)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_disconnected", r.text
        assert state.submits == before + 1


def test_stream_failure_arrives_as_an_error_event(gateway: GatewayFactory) -> None:
    with mj_server(fail_prompts=["doomed"], fail_reason="[Banned prompt] nope") as (srv, _):
        gw = start_gateway(gateway, srv, new_key(), routes="  - {name: mj-v7, retries: 0}\n")
        stream = client(gw).images.generate(model="mj-v7", prompt="doomed", stream=True, partial_images=1)
        with pytest.raises(openai.APIError) as ei:
            list(stream)
        assert "[Banned prompt] nope" in ei.value.message


def test_stream_sends_keep_alive_comments_while_nothing_changes(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(step_s=0.6, progress_steps=[50]) as (srv, state):
        gw = start_gateway(gateway, srv, key, env={"SSE_KEEPALIVE_S": "0.2"})
        lines: list[str] = []
        with httpx.stream("POST", gw.base_url + "/images/generations", timeout=30,
                          json={"model": "mj-v7", "prompt": "a slow comet", "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
        assert lines.count(": keep-alive") >= 3, lines
        assert any(ln.startswith("data: ") and "image_generation.completed" in ln for ln in lines)
        assert lines[-1] == "data: [DONE]"
        gw.remember(*lines)
        gw.assert_secret_absent(key)
