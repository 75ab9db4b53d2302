export * from "./noise/index.js";
