// ProbeRouting: the trainer's record of how a fixed set of tokens is routed at
// every evaluation, from which StabilityCurve.swift reads when routing settles.
//
// The probe is `probeWindows` validation windows, evenly spaced over the split
// and chosen once when the trainer is made (`probeInputs`), so every record
// routes the same P tokens in the same order. At each evaluation (after the
// validation loss, in evaluation mode: no router noise, no expert dropout) one
// forward pass over them keeps each MoE layer's top-1 expert per token. Only
// P integers per layer are stored per evaluation.
//
// Cost: one forward pass of P windows per evaluation, against a forward, a
// backward and an optimiser step of B windows for each training step; with
// gpt-moe's defaults (16 probe windows, 13 evaluations, 1,200 steps of 32) the
// probe is a few hundredths of a percent of the forward passes. `probeSeconds`
// measures it; gpt-moe reports it beside the training time, and
// Notebooks/part6-specialization.md, §5 has a measured run.
//
// Legend: P probe windows, T context, L MoE layers.
import Foundation

/// The probe's routing at one evaluation.
public struct ProbeRecord: Equatable {
    public let step: Int
    /// Per MoE layer (in `GPT.moeLayers` order), the top-1 expert of each probe token.   [L][P·T]
    public let topExperts: [[Int]]
}

extension LanguageModelTrainer {
    /// `count` validation windows evenly spaced over the split (all of them if it has fewer).   [count][T]
    static func probeWindows(_ count: Int, of validation: TokenWindows) -> [[Int]] {
        let n = min(count, validation.count)
        guard n > 0 else { return [] }
        return (0..<n).map { validation.batch([$0 * validation.count / n]).inputs }
    }

    /// Routes the probe windows and appends the record (routing statistics are reset, as after evaluation).
    func recordProbe() {
        let start = Self.now()
        let layers = model.routeStream(probeInputs.flatMap { $0 }, batch: config.batchSize)
        probeRecords.append(ProbeRecord(step: step, topExperts: layers.map(\.topExperts)))
        probeSeconds += Self.now() - start
    }

    /// Per MoE layer, the agreement of every recorded evaluation with the last one.
    public var stabilityCurves: [StabilityCurve] {
        let layers = probeRecords.first?.topExperts.count ?? 0
        return (0..<layers).map { l in
            StabilityCurve(steps: probeRecords.map(\.step), assignments: probeRecords.map { $0.topExperts[l] })
        }
    }
}
