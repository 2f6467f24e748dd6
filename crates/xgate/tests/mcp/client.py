"""A real MCP client (the official Python SDK) against `xgate serve`'s /mcp endpoint.

Usage: client.py BASE_URL API_KEY USER_ID LIMIT
Lists the tools, then pages the user's whole media timeline through them, and prints one JSON
object: the tool names, their input schemas' required fields, the tweet ids in order, and each
call's cost as the server reported it.
"""

import asyncio
import json
import sys

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(base: str, key: str, user: str, limit: int) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            ids, costs, pages = [], [], 0
            result = await session.call_tool("user_medias", {"user_id": user, "limit": limit})
            while True:
                if result.is_error:
                    raise SystemExit(f"tool error: {result.content[0].text}")
                page = result.structured_content
                pages += 1
                ids += [t["tweet_id"] for t in page["results"]]
                costs.append((result.meta or {}).get("xgate/credits_cost"))
                token = page["continuation_token"]
                if token is None:
                    break
                result = await session.call_tool(
                    "user_medias_continuation",
                    {"user_id": user, "continuation_token": token, "limit": limit},
                )
            bad = await session.call_tool(
                "user_medias_continuation",
                {"user_id": user, "continuation_token": "forged", "limit": limit},
            )
            print(json.dumps({
                "protocol": init.protocol_version,
                "server": init.server_info.name,
                "tools": sorted(t.name for t in tools.tools),
                "required": {t.name: sorted(t.input_schema.get("required", [])) for t in tools.tools},
                "ids": ids,
                "pages": pages,
                "costs": costs,
                "forged_is_error": bad.is_error,
                "forged_text": bad.content[0].text,
            }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
