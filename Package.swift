// swift-tools-version:6.2
//
// The package: one library (`MoE`), four executables (`mnist-moe`, `gpt-moe`,
// `moe-bench`, `pretrained-moe`) and one test target. No dependencies: the standard library, Foundation and
// Dispatch only.
//
// The exercises (Notebooks/exercises.md) are four more targets: `Exercises`
// (the skeletons a student edits), `ExerciseSolutions` (reference answers, kept
// apart), `ExerciseGrader` (the checks, and the contract both modules meet) and
// the `exercises` command that runs the checks; `ExerciseTests` grades both.
//
// This package itself depends on nothing. Other packages may depend on
// MoE by version; the README's "Using MoE from your own package" shows how.
//
// SwiftPM refuses a dependency resolved by version whose targets use
// `unsafeFlags` — unless that dependency's manifest is at tools version 6.2
// or later, from which SwiftPM 6.2 no longer checks (swift-package-manager
// #8951). So this manifest is at 6.2, and toolchains 5.9–6.1 read
// Package@swift-5.9.swift instead, which leaves the flags off the `MoE`
// library so that it stays a valid dependency there too (build with
// `-c release` on those toolchains for speed). .ci/run builds a small package
// that depends on a tagged copy of this checkout, to keep that true.
//
// Why the unsafe flags:
//   * `-O` in every configuration. `swift run mnist-moe`, typed as is, builds
//     the debug configuration, where SIMD code runs hundreds of times slower.
//     The compute code is therefore always optimised; debugging a kernel is
//     still possible by removing this line.
//   * `-target-cpu native` on x86-64. Without a CPU that has FMA, LLVM lowers
//     `SIMD.addProduct` to a library call per lane (~0.8 GFLOP/s instead of
//     ~100). Building for the host CPU makes the binary non-portable, which is
//     fine for a package that is always built from source. arm64 always has FMA.
import PackageDescription

var computeFlags: [SwiftSetting] = [.unsafeFlags(["-O"])]
#if arch(x86_64)
computeFlags.append(.unsafeFlags(["-target-cpu", "native"]))
#endif

let package = Package(
    name: "MoE",
    // The sources are written for the Swift 5 language mode (tools 6.2 would
    // otherwise compile them in Swift 6 mode, with its strict concurrency checks).
    products: [
        .library(name: "MoE", targets: ["MoE"]),
        .executable(name: "mnist-moe", targets: ["mnist-moe"]),
        .executable(name: "gpt-moe", targets: ["gpt-moe"]),
        .executable(name: "moe-bench", targets: ["moe-bench"]),
        .executable(name: "pretrained-moe", targets: ["pretrained-moe"]),
        .executable(name: "exercises", targets: ["exercises"]),
    ],
    targets: [
        .target(name: "MoE", swiftSettings: computeFlags),
        .executableTarget(name: "mnist-moe", dependencies: ["MoE", "Exercises"], swiftSettings: computeFlags),
        .executableTarget(name: "gpt-moe", dependencies: ["MoE", "Exercises"], swiftSettings: computeFlags),
        .executableTarget(name: "moe-bench", dependencies: ["MoE"], swiftSettings: computeFlags),
        .executableTarget(name: "pretrained-moe", dependencies: ["MoE"], swiftSettings: computeFlags),
        .testTarget(name: "MoETests", dependencies: ["MoE"], exclude: ["Fixtures"], swiftSettings: computeFlags),
        // Exercises: the grader owns the contract, the two answer modules meet it.
        .target(name: "ExerciseGrader", dependencies: ["MoE"], swiftSettings: computeFlags),
        .target(name: "Exercises", dependencies: ["MoE", "ExerciseGrader"], swiftSettings: computeFlags),
        .target(name: "ExerciseSolutions", dependencies: ["MoE", "ExerciseGrader"], swiftSettings: computeFlags),
        .executableTarget(name: "exercises", dependencies: ["MoE", "ExerciseGrader", "Exercises", "ExerciseSolutions"],
                          swiftSettings: computeFlags),
        .testTarget(name: "ExerciseTests", dependencies: ["ExerciseGrader", "Exercises", "ExerciseSolutions"],
                    swiftSettings: computeFlags),
    ],
    swiftLanguageModes: [.v5]
)
