-- wrk: POST a 1 KiB JSON body, the shape of a typical API write. With THINK_MS set, each
-- connection waits that long after an answer before its next request (a steady load well
-- under capacity); without it, wrk sends as fast as answers come (saturation).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"item":"book","note":"' .. string.rep("x", 1000) .. '"}'

local think = tonumber(os.getenv("THINK_MS") or "0")
if think > 0 then
  function delay()
    return think
  end
end
