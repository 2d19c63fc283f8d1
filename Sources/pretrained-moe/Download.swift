import Foundation
import MoE

func runDownload(_ o: Options) throws {
    throw UsageError("download is not built yet")
}
