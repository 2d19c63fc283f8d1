// The five runs of the notes ("MoE vs Dense: Experiment Results"), as presets.
//
// The notes name the runs but not every setting behind them, so each preset
// is defined here from what the notes say it was for, and `--help` and the
// README say the same:
//
//   dense           every block has the dense GELU MLP: the baseline to beat.
//   baseline        the MoE: every other block's MLP becomes 8 GELU experts with
//                   the MLP's own shape, top-1 routing with Switch's gate (the
//                   expert's output times its router probability, see
//                   GPTConfig.renormalizesGates), Switch balancing loss
//                   α = 0.01. A token uses exactly one expert, so active
//                   parameters equal the dense model's plus the router's
//                   (the "equal active parameters" comparison).
//   top2            baseline with top-2 routing: twice the expert compute per
//                   token (the notes' best training loss, worst validation loss).
//   strong_reg      baseline with 10× the balancing weight, α = 0.1: routing is
//                   pushed harder towards an even load.
//   throughput_opt  baseline's model, trained for tokens per second: batches of
//                   2× the windows (and half the steps, so the same tokens), so
//                   each expert multiplies twice as many rows per call and the
//                   per-step costs (routing bookkeeping, thread hand-offs, Adam)
//                   are spread over twice the tokens. Same parameters as
//                   baseline, as in the notes (17,286,656 both).
//
// Flags given on the command line override a preset's values (and apply to
// every preset in `compare`).
//
// The runs: Notebooks/part4-gpt.md, §8.
import MoE

struct Preset {
    let name: String
    /// One line for --help and the README.
    let summary: String
    /// How the MoE blocks route and balance; nil for the dense model. (The MoE
    /// goes in every other block unless --moe-layers says otherwise.)
    let routing: RoutingSetup?
    /// Windows per step, as a multiple of --batch-size.
    let batchMultiplier: Int

    /// Softmax top-k routing with the Switch balancing loss of weight α. With
    /// k = 1 the gate is not renormalised (GPTConfig.layerRouting says why).
    /// The GPT keeps the gate it was measured with (README, part 4): a bias,
    /// no noise. `--gate-noise learned --no-gate-bias` gives it the walkthrough's.
    static func topK(_ k: Int, alpha: Float) -> RoutingSetup {
        var r = RoutingSetup.gptDefault
        r.router = "topk"; r.k = k; r.balancing = ["switch"]; r.auxWeight = alpha
        return r
    }

    static let all: [Preset] = [
        Preset(name: "dense", summary: "dense GELU MLP in every block (no experts)",
               routing: nil, batchMultiplier: 1),
        Preset(name: "baseline", summary: "MoE in every other block: 8 experts, top-1 (Switch gate), balancing α 0.01",
               routing: topK(1, alpha: 0.01), batchMultiplier: 1),
        Preset(name: "top2", summary: "baseline with top-2 routing (2× expert compute per token)",
               routing: topK(2, alpha: 0.01), batchMultiplier: 1),
        Preset(name: "strong_reg", summary: "baseline with 10× the balancing weight, α 0.1",
               routing: topK(1, alpha: 0.1), batchMultiplier: 1),
        Preset(name: "throughput_opt", summary: "baseline's model, 2× the windows per step, half the steps (larger expert matmuls)",
               routing: topK(1, alpha: 0.01), batchMultiplier: 2),
    ]

    static func named(_ name: String) -> Preset? { all.first { $0.name == name } }
}
