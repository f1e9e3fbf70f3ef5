-- The mixed registry load of bench/load.py, for wrk: what clients pulling lazily send, in a fixed rotation
-- of ten requests per connection: 4 manifest GETs by tag, 4 ranged GETs of 4 KiB of the layer (at random
-- 4 KiB-aligned offsets, as a lazy reader fetches chunks), 2 whole-layer GETs.
--
--   wrk -s bench/load.lua URL -- MANIFEST_PATH BLOB_PATH BLOB_SIZE

local manifest, blob, blob_size
local counter = 0
local accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"

function init(args)
  manifest, blob, blob_size = args[1], args[2], tonumber(args[3])
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
  counter = counter + 1
  local slot = counter % 10
  if slot < 4 then
    return wrk.format("GET", manifest, { ["Accept"] = accept })
  elseif slot < 8 then
    local start = math.random(0, math.floor(blob_size / 4096) - 2) * 4096
    return wrk.format("GET", blob, { ["Range"] = "bytes=" .. start .. "-" .. (start + 4095) })
  else
    return wrk.format("GET", blob)
  end
end
