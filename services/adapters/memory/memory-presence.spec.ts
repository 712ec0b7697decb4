import { presenceContract } from "../../../test/contract/presence.contract.js";
import { MemoryPresence } from "./memory-presence.js";

presenceContract("memory", async () => new MemoryPresence());
