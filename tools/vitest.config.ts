import { projectConfig } from '../vitest.shared.js';

export default projectConfig({ include: ['**/*.spec.ts'] });
