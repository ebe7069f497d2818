// Full-jitter capped exponential backoff (the "Full Jitter" of the AWS
// architecture blog): the delay before retry number `attempt` (0-based) is
// uniformly random in [0, min(maxMs, initialMs * 2^attempt)].

export function backoffDelay(attempt: number, initialMs = 500, maxMs = 15000, random: () => number = Math.random): number {
  const a = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  const initial = Number.isFinite(initialMs) && initialMs > 0 ? initialMs : 0;
  const max = Number.isFinite(maxMs) && maxMs > 0 ? maxMs : 0;
  // 2^a overflows to Infinity for large a; min() then caps it.
  const cap = Math.min(max, initial * Math.pow(2, Math.min(a, 1024)));
  return Math.min(cap, Math.floor(random() * (cap + 1)));
}
