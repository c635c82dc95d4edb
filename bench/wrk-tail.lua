-- wrk script for bench/tails.sh: the latency tail in numbers. Prints
--   tail p50=<ms> p90= p99= p999= p9999= max= n=<requests>
--   curve <ms at p90> <p91> ... <p99> <p99.5> <p99.9>
-- The curve shows the shape of the tail: a Nagle/delayed-ACK stall would be a step at 40 ms (or
-- its multiples), a queue a smooth rise, rare stalls (GC, a timer's work) a jump at the end.
-- (wrk's latency[i] does not give the histogram's buckets, so the curve is made of percentiles.)
done = function(summary, latency, requests)
  local function ms(us) return string.format("%.1f", us / 1000) end
  io.write(string.format("tail p50=%s p90=%s p99=%s p999=%s p9999=%s max=%s n=%d\n",
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency:percentile(99.99)), ms(latency.max),
    summary.requests))
  local parts = {}
  for _, p in ipairs({90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 99.5, 99.9}) do
    parts[#parts + 1] = ms(latency:percentile(p))
  end
  io.write("curve " .. table.concat(parts, " ") .. "\n")
end
