// RouterRegistry: routers written outside the library, selectable by name on
// the command line (`mnist-moe --router exercise1`, `gpt-moe --router mine`).
//
// Router.swift says how to write a router; this file is how to *train* one
// without editing a program. The library cannot know a student's types (the
// `Exercises` module depends on the library, not the other way round), so the
// programs fill this table at startup: mnist-moe and gpt-moe call
// `ExerciseRouters.register()` (Sources/Exercises/YourSubmission.swift), which
// registers the exercise routers and any router of your own listed there.
// From then on `--router NAME` builds it through `RoutingSetup` like a
// built-in one, so the gate, experts, balancing losses, capacity, reports and
// summary.json are all the same code as for `--router topk`.
//
// What a registered router reports: `RoutingSetup.resolvingRegisteredRouter`
// builds it once and, when its slots per token are fixed (a top-1 router has
// 1 whatever --top-k says), records those as `k`, so a top-1 router is
// reported, balanced against and saved as k = 1. A router with E slots
// (expert choice: slot j is expert j) keeps --top-k, which is then its
// average experts per token, as in the library's expert choice
// (Notebooks/exercises.md, "How the exercises work": "Your router on the
// command line").
//
// Legend: E experts, D model width.
import Foundation

/// What a registered router is built from: the layer's sizes and the command line's k.
public struct RouterRequest {
    /// E, the layer's experts.
    public let experts: Int
    /// --top-k (or the preset's); a router with a fixed k (top-1) ignores it.
    public let k: Int
    /// D, the width of the layer's input (for routers with weights of their own).
    public let modelDim: Int
    /// Seed for the router's own random draws and weights.
    public let seed: UInt64

    public init(experts: Int, k: Int, modelDim: Int, seed: UInt64) {
        self.experts = experts
        self.k = k
        self.modelDim = modelDim
        self.seed = seed
    }
}

public enum RouterRegistry {
    public struct Entry {
        /// The word after --router.
        public let name: String
        /// One line for --help.
        public let about: String
        public let make: (RouterRequest) -> Router
    }

    /// Every registered router, in registration order. Filled once at startup,
    /// before any training thread exists.
    public private(set) static var entries: [Entry] = []

    /// Adds (or replaces) the router called `name`. A built-in router's name
    /// cannot be taken: `--router topk` always means the library's.
    public static func register(_ name: String, about: String, make: @escaping (RouterRequest) -> Router) {
        precondition(!RoutingSetup.routers.contains(name), "RouterRegistry: '\(name)' is a built-in router")
        precondition(!name.isEmpty && !name.hasPrefix("-") && !name.contains(" "),
                     "RouterRegistry: a router's name is one word, got '\(name)'")
        entries.removeAll { $0.name == name }
        entries.append(Entry(name: name, about: about, make: make))
    }

    public static func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// Built-in and registered names, for messages and --help.
    public static var allNames: [String] { RoutingSetup.routers + entries.map(\.name) }

    /// The usage lines of the registered routers ("" when there are none).
    public static var usage: String {
        entries.map { "  --router \($0.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \($0.about)" }
            .joined(separator: "\n")
    }
}

extension RoutingSetup {
    /// Whether `router` names a registered (not built-in) router.
    public var isRegisteredRouter: Bool { RouterRegistry.entry(router) != nil }

    /// These settings with a registered router's own k: builds the router once
    /// for `experts` and `modelDim` and, when it fills a fixed number of slots
    /// per token other than k (and fewer than E), records that number as k, so
    /// that tables, balancing references and summary.json describe the router
    /// that runs. Built-in routers are returned unchanged.
    public func resolvingRegisteredRouter(experts: Int, modelDim: Int) -> RoutingSetup {
        guard let entry = RouterRegistry.entry(router) else { return self }
        var s = self
        let probe = entry.make(RouterRequest(experts: experts, k: k, modelDim: modelDim, seed: 0))
        if probe.slots != k && probe.slots >= 1 && probe.slots < experts { s.k = probe.slots }
        return s
    }
}
