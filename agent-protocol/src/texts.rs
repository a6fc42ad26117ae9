//! The exact texts the reference implementation puts on the wire or hands to applications.
//!
//! Clients match on these strings; keep them byte for byte.

/// `cf_agent_state_error` (and RPC error) text for a readonly connection.
pub const CONNECTION_READONLY: &str = "Connection is readonly";

/// `cf_agent_state_error` text when the state validation hook refused an update.
pub const STATE_UPDATE_REJECTED: &str = "State update rejected";

/// RPC error text when a regular method throws something that is not an `Error`.
pub const UNKNOWN_ERROR: &str = "Unknown error occurred";

/// Rejection text of pending calls when the connection closes (client side).
pub const CONNECTION_CLOSED: &str = "Connection closed";

/// Body of the `400` answer for an unknown agent namespace.
pub const INVALID_REQUEST: &str = "Invalid request";

/// Body of the `404` answer when an agent has no HTTP handler.
pub const NOT_IMPLEMENTED: &str = "Not implemented";

/// `Method {method} does not exist`.
pub fn method_does_not_exist(method: &str) -> String {
    format!("Method {method} does not exist")
}

/// `Method {method} is not callable`.
pub fn method_not_callable(method: &str) -> String {
    format!("Method {method} is not callable")
}

/// `RPC call to {method} timed out after {ms}ms` (client-side timeout).
pub fn rpc_timed_out(method: &str, ms: u128) -> String {
    format!("RPC call to {method} timed out after {ms}ms")
}

/// The function-valued members of the reference `Agent` class (`agents` 0.32.0) and of the
/// objects it inherits from (`DurableObject`, `Object.prototype`), sorted.
///
/// The reference server looks a called method up as a property of the agent object: a name
/// that resolves to one of these functions but is not decorated `@callable()` is answered
/// `Method {name} is not callable`, whereas a name that resolves to nothing (or to a
/// non-function such as the `state` or `name` getter) is answered `Method {name} does not
/// exist`. The lookup is case-sensitive. [`is_reference_agent_member`] applies this list.
pub const REFERENCE_AGENT_MEMBERS: &[&str] = &[
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "__unsafe_ensureInitialized",
    "_activeAgentToolRunCount",
    "_agentToolClassByName",
    "_agentToolInterruptedExtrasFromRow",
    "_agentToolRecoveryDeadline",
    "_agentToolRunInfoFromRow",
    "_agentToolRunRecoveryRunIds",
    "_applyManagedFiberRecoveryResult",
    "_armDetachedBackbone",
    "_armDetachedBackboneInner",
    "_asAgentToolChildAdapter",
    "_autoWrapCustomMethods",
    "_broadcastAgentToolChunks",
    "_broadcastAgentToolEvent",
    "_broadcastAgentToolMilestones",
    "_broadcastAgentToolStoredChunks",
    "_broadcastAgentToolStoredChunksFromAdapter",
    "_broadcastAgentToolTerminal",
    "_broadcastProtocol",
    "_callStatePersistenceHook",
    "_cfDetachedReconcileTick",
    "_cf_acquireFacetKeepAlive",
    "_cf_asDurableObjectNamespace",
    "_cf_broadcastToSubAgent",
    "_cf_checkRunFibersForFacet",
    "_cf_cleanupFacetPrefix",
    "_cf_closeSubAgentConnection",
    "_cf_closeSubAgentConnectionsForPrefix",
    "_cf_connectionTargetsSubAgent",
    "_cf_destroyDescendantFacet",
    "_cf_forwardSubAgentWebSocketClose",
    "_cf_forwardSubAgentWebSocketConnect",
    "_cf_forwardSubAgentWebSocketMessage",
    "_cf_forwardToFacet",
    "_cf_getTopLevelNamespaceByClassName",
    "_cf_handleSubAgentWebSocketClose",
    "_cf_handleSubAgentWebSocketConnect",
    "_cf_handleSubAgentWebSocketMessage",
    "_cf_hydrateSubAgentConnectionsFromRoot",
    "_cf_initAsFacet",
    "_cf_invokeAgentPath",
    "_cf_invokeSubAgent",
    "_cf_invokeSubAgentPath",
    "_cf_isWebSocketUpgradeRequest",
    "_cf_parentAgentFacetProxy",
    "_cf_registerFacetRun",
    "_cf_releaseFacetKeepAlive",
    "_cf_requestTargetsSubAgent",
    "_cf_resolveSubAgent",
    "_cf_routeLifecycle",
    "_cf_scheduleDestroy",
    "_cf_sendToSubAgentConnection",
    "_cf_setSubAgentConnectionState",
    "_cf_subAgentConnectionMetas",
    "_cf_unregisterFacetRun",
    "_checkFacetRunFibers",
    "_checkOrphanedWorkflows",
    "_checkRunFibers",
    "_countWorkflows",
    "_decodeCursor",
    "_defaultAgentToolPreview",
    "_deliverDetachedMilestone",
    "_deliverDetachedTerminal",
    "_detachedFastPath",
    "_emit",
    "_encodeCursor",
    "_ensureSchema",
    "_executeManagedFiber",
    "_fiberErrorMessage",
    "_fiberInspectionFromRow",
    "_fiberRecoveryErrorMessage",
    "_fiberRecoveryPayload",
    "_findAgentBindingNameForClass",
    "_findBindingNameForNamespace",
    "_findWorkflowBindingByName",
    "_finishAgentToolRun",
    "_forwardAgentToolStream",
    "_getAgentToolChunksForRecovery",
    "_getWorkflowBindingNames",
    "_handleInternalFiberRecovery",
    "_handleStateChanged",
    "_hasOutstandingDetachedRuns",
    "_hasPendingDestroy",
    "_hasPendingFiberRecovery",
    "_inspectAgentToolRunForRecovery",
    "_interruptedMessageForReason",
    "_isAbsoluteHttpUrl",
    "_isAgentToolRowHardTerminal",
    "_isAgentToolTerminal",
    "_isCallable",
    "_isSameAgentPathPrefix",
    "_isTerminalFiberStatus",
    "_isTerminalOnlyAgentToolRun",
    "_lifecycleRouteAddress",
    "_listFiberRows",
    "_listFiberRowsByStatus",
    "_listTerminalFiberRowsForDelete",
    "_liveDetachedRunCount",
    "_markAgentToolRunning",
    "_maybeDeliverDetachedMilestone",
    "_maybeWarnDetachedLiveCount",
    "_nextHousekeepingWakeMs",
    "_normalizeFiberStatusFilter",
    "_notifyManagedFiberTerminal",
    "_observeForwardedProgress",
    "_onAgentToolStreamProgress",
    "_onAlarmHousekeeping",
    "_onEmail",
    "_onHostJob",
    "_parseAgentToolJson",
    "_parseDetachedOption",
    "_parseFiberJsonObject",
    "_parseFiberRecoverySnapshot",
    "_parseFiberSnapshot",
    "_pendingDestroyAlarm",
    "_readAgentToolRun",
    "_readFiber",
    "_readFiberByKey",
    "_readSchemaVersion",
    "_reattachAgentToolRunToTerminal",
    "_reconcileAgentToolRuns",
    "_recordFiberRecoveryFailure",
    "_redeemableAuthUrl",
    "_replayAgentToolRuns",
    "_replayAndInterruptAgentToolRun",
    "_restoreAgentFacetContext",
    "_resultFromAgentToolRow",
    "_rootAlarmOwner",
    "_routeLifecycleToRoot",
    "_routeLifecycleToTarget",
    "_rowToWorkflowInfo",
    "_runDeferredAgentToolFinishHooks",
    "_runDetachedDelivery",
    "_runFacetInitInvocation",
    "_runFiberInternal",
    "_runFiberRecoveryHook",
    "_runFiberWithStashWrapper",
    "_safeRunOnError",
    "_scheduleAgentToolRunRecovery",
    "_settleManagedFiberExecution",
    "_settleWithinRecoveryTimeout",
    "_stringifyAgentToolOutput",
    "_stringifyFiberSnapshot",
    "_syncHostJobs",
    "_teardownGivenUpAgentToolChild",
    "_terminalResultFromInspection",
    "_tryCatch",
    "_unsafe_getConnectionFlag",
    "_unsafe_setConnectionFlag",
    "_updateAgentToolTerminal",
    "_updateWorkflowTracking",
    "_waitForManagedFiber",
    "_waitForManagedFiberTerminal",
    "_withAgentSpan",
    "_withFiberRecoveryTimeout",
    "_withFiberStash",
    "_workflowOrigin",
    "_workflow_broadcast",
    "_workflow_handleCallback",
    "_workflow_updateState",
    "abortSubAgent",
    "addMcpServer",
    "alarm",
    "approveWorkflow",
    "broadcast",
    "broadcastMcpServers",
    "cancelAgentTool",
    "cancelFiber",
    "cancelFiberByKey",
    "cancelSchedule",
    "clearAgentToolRuns",
    "constructor",
    "createMcpOAuthProvider",
    "deleteFibers",
    "deleteSubAgent",
    "deleteWorkflow",
    "deleteWorkflows",
    "dequeue",
    "dequeueAll",
    "dequeueAllByCallback",
    "destroy",
    "fetch",
    "fetchInternalHost",
    "getCallableMethods",
    "getConnection",
    "getConnectionTags",
    "getConnections",
    "getMcpServers",
    "getQueue",
    "getQueues",
    "getSchedule",
    "getScheduleById",
    "getSchedules",
    "getWorkflow",
    "getWorkflowStatus",
    "getWorkflows",
    "hasAgentToolRun",
    "hasOwnProperty",
    "hasSubAgent",
    "inspectFiber",
    "inspectFiberByKey",
    "isConnectionProtocolEnabled",
    "isConnectionReadonly",
    "isPrototypeOf",
    "keepAlive",
    "keepAliveWhile",
    "listFibers",
    "listSchedules",
    "listSubAgents",
    "migrateWorkflowBinding",
    "onAgentToolFinish",
    "onAgentToolStart",
    "onAlarm",
    "onAlarmMemoryLimit",
    "onBeforeSubAgent",
    "onClose",
    "onConnect",
    "onError",
    "onFiberRecovered",
    "onJob",
    "onMessage",
    "onProgress",
    "onRequest",
    "onStart",
    "onStateChanged",
    "onStateUpdate",
    "onWorkflowCallback",
    "onWorkflowComplete",
    "onWorkflowError",
    "onWorkflowEvent",
    "onWorkflowProgress",
    "parentAgent",
    "pauseWorkflow",
    "propertyIsEnumerable",
    "queue",
    "rejectWorkflow",
    "removeMcpServer",
    "render",
    "replyToEmail",
    "reportProgress",
    "resolveFiber",
    "restartWorkflow",
    "resumeWorkflow",
    "retry",
    "runAgentTool",
    "runFiber",
    "runWorkflow",
    "schedule",
    "scheduleEvery",
    "sendEmail",
    "sendWorkflowEvent",
    "setConnectionReadonly",
    "setState",
    "shouldConnectionBeReadonly",
    "shouldSendProtocolMessages",
    "sql",
    "startFiber",
    "stash",
    "subAgent",
    "terminateWorkflow",
    "toLocaleString",
    "toString",
    "validateStateChange",
    "valueOf",
];

/// Whether `method` names a function member of the reference `Agent` class or its prototype
/// chain ([`REFERENCE_AGENT_MEMBERS`]): such a call is answered `Method {method} is not
/// callable` unless the agent exposes a method of that name itself.
pub fn is_reference_agent_member(method: &str) -> bool {
    REFERENCE_AGENT_MEMBERS.binary_search(&method).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_list_is_sorted_and_lookup_exact() {
        assert!(REFERENCE_AGENT_MEMBERS.windows(2).all(|w| w[0] < w[1]));
        for m in [
            "setState",
            "onConnect",
            "sql",
            "schedule",
            "toString",
            "constructor",
        ] {
            assert!(is_reference_agent_member(m), "{m}");
        }
        for m in ["SetState", "state", "name", "increment", "", "__proto__"] {
            assert!(!is_reference_agent_member(m), "{m}");
        }
    }
}
