-- Argo CD health of a kubetune.io FineTuneJob.
--
-- Written for argocd-cm's sandbox: only base, table, package and os.time/os.date
-- exist. There is no string or math library, so no string methods, and nothing
-- that may be nil is concatenated. tonumber/tostring cover numbers that arrive as
-- strings (json.Number). Argo CD does not call this while deletionTimestamp is set.
--
--   observedGeneration missing or < generation  Progressing
--   condition Accepted=False                    Degraded (its message)
--   Pending, Validating                         Progressing
--   Queued                                      Progressing (the Queued condition's message)
--   Running                                     Progressing ("Running: N% complete")
--   Succeeded                                   Healthy
--   Failed, Cancelled                           Degraded (the condition that explains it)
--   Suspended                                   Suspended
--   no phase yet                                Progressing
--   a phase this script does not know           Unknown
--
-- Cancelled is Degraded although a user asked for it: the job will never produce
-- its model, and the application should say so rather than look Healthy.
-- An unknown phase (from a newer operator) is Unknown rather than a guess, so an
-- outdated health check shows up instead of holding a sync wave as Progressing.
-- The percent in the Running message only refreshes when Argo CD re-reads the
-- object: with /status/progress in ignoreResourceUpdates that is not every update.

-- BEGIN shared helpers: identical in every kubetune.io health.lua (a test checks).
local function conditions()
  if type(obj.status) == "table" and type(obj.status.conditions) == "table" then
    return obj.status.conditions
  end
  return {}
end

-- The first condition of the type (and status, when given).
local function find(ctype, cstatus)
  for _, c in ipairs(conditions()) do
    if c.type == ctype and (cstatus == nil or c.status == cstatus) then
      return c
    end
  end
  return nil
end

-- A condition's message; nil when it has none.
local function message(c)
  if c ~= nil and type(c.message) == "string" and c.message ~= "" then
    return c.message
  end
  return nil
end

-- A condition's message, else its reason; nil when it has neither.
local function text(c)
  local m = message(c)
  if m == nil and c ~= nil and type(c.reason) == "string" and c.reason ~= "" then
    return c.reason
  end
  return m
end

-- The message of the most recent False condition that has one (RFC 3339 UTC times
-- sort as strings). Conditions without a message, such as the operator's
-- phase conditions turned False with reason "Now<Phase>", explain nothing.
local function latestFalse()
  local best, bestTime = nil, nil
  for _, c in ipairs(conditions()) do
    local t = c.lastTransitionTime
    if type(t) ~= "string" then
      t = ""
    end
    if c.status == "False" and message(c) ~= nil and (bestTime == nil or t > bestTime) then
      best, bestTime = c, t
    end
  end
  return message(best)
end

-- The text of the first {type, status} in `wanted` that is present, else of the
-- latest False condition, else `fallback`.
local function explain(wanted, fallback)
  for _, w in ipairs(wanted) do
    local t = text(find(w[1], w[2]))
    if t ~= nil then
      return t
    end
  end
  return latestFalse() or fallback
end

local function health(status, msg)
  return {status = status, message = msg}
end

-- Health before the phase is looked at: Progressing until the operator has
-- observed the current generation (a status without observedGeneration counts as
-- not observed), then Degraded if it rejected the spec. nil otherwise.
-- Deviation: once deletion has started a lower observedGeneration is accepted. The
-- API server bumps metadata.generation when it sets deletionTimestamp, and the
-- operator's deletion handling does not write observedGeneration; the phase it
-- writes then (DeletionBlocked, Deleting) is current all the same.
local function precheck()
  local generation, deleting = nil, false
  if type(obj.metadata) == "table" then
    generation = tonumber(obj.metadata.generation)
    deleting = obj.metadata.deletionTimestamp ~= nil
  end
  local observed = nil
  if type(obj.status) == "table" then
    observed = tonumber(obj.status.observedGeneration)
  end
  if observed == nil or (generation ~= nil and observed < generation and not deleting) then
    if generation == nil then
      return health("Progressing", "Waiting for the operator to observe the resource")
    end
    local why = "Waiting for the operator to observe generation " .. tostring(generation)
    return health("Progressing", why)
  end
  local rejected = find("Accepted", "False")
  if rejected ~= nil then
    return health("Degraded", text(rejected) or "The spec was not accepted")
  end
  return nil
end
-- END shared helpers

local function evaluate()
  local early = precheck()
  if early ~= nil then
    return early
  end
  local status = obj.status
  local phase = status.phase
  if phase == nil then
    return health("Progressing", "Waiting for the operator to set a phase")
  end
  if phase == "Pending" or phase == "Validating" then
    return health("Progressing", text(find(phase, "True")) or phase)
  end
  if phase == "Queued" then
    return health("Progressing", text(find("Queued")) or "Queued")
  end
  if phase == "Running" then
    local percent = nil
    if type(status.progress) == "table" then
      percent = tonumber(status.progress.percent)
    end
    if percent ~= nil then
      return health("Progressing", "Running: " .. tostring(percent) .. "% complete")
    end
    return health("Progressing", text(find("Running", "True")) or "Running")
  end
  if phase == "Succeeded" then
    local why = text(find("Succeeded", "True"))
    if why == nil and type(status.model) == "string" then
      why = "Created FineTunedModel " .. status.model
    end
    return health("Healthy", why or "Succeeded")
  end
  if phase == "Failed" then
    return health("Degraded", explain({{"Failed", "True"}, {"Succeeded", "False"}}, "Failed"))
  end
  if phase == "Cancelled" then
    local wanted = {{"Cancelled", "True"}, {"Failed", "True"}, {"Succeeded", "False"}}
    return health("Degraded", explain(wanted, "Cancelled"))
  end
  if phase == "Suspended" then
    return health("Suspended", text(find("Suspended", "True")) or "Suspended")
  end
  return health("Unknown", "Unknown phase " .. tostring(phase))
end

return evaluate()
