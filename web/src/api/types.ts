// Response shapes of the Merchant Monitor HTTP API, under the names the dashboard uses.
//
// They are not written here: schema.d.ts is generated from openapi.json (`npm run gen:api`),
// and openapi.json is the server's own document, derived from its Rust types (see /openapi.json
// on a running server). A test fails when either copy is stale.

import type { components } from './schema';

type Schemas = components['schemas'];

export type MerchantRank = Schemas['MerchantRow'];

export type MerchantsResponse = Schemas['MerchantsResponse'];

export type SearchResponse = Schemas['SearchResponse'];

export type ActivityBucket = Schemas['ActivityBucket'];

export type ActivityResponse = Schemas['ActivityResponse'];

export type ApiRow = Schemas['ApiRow'];

export type ApisResponse = Schemas['ApisResponse'];

/** One call as ingested: the mapped fields plus whatever else the record carried. */
export type CallEvent = Schemas['CallEvent'];

export type EventsPage = Schemas['EventsPage'];

export type ErrorBody = Schemas['ErrorBody'];

export type EventType = Schemas['EventType'];

export type EventTypeList = Schemas['EventTypeList'];

export type SchemaRecord = Schemas['SchemaRecord'];

export type SchemaList = Schemas['SchemaList'];

export type CompatibilityReport = Schemas['CompatibilityReport'];

export type Violation = Schemas['Violation'];

export type TypeStats = Schemas['TypeStats'];

export type CompatibilityMode = Schemas['CompatibilityMode'];
