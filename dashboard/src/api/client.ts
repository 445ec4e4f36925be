import createClient, { type Client } from 'openapi-fetch'
import { ApiError } from './errors'
import type { paths } from './schema.gen'

export type Api = Client<paths>

/** The routes that hand out tokens never carry one (and a refused refresh must not wait on a refresh). */
const TOKEN_ROUTES: ReadonlySet<string> = new Set(['/v1/auth/register', '/v1/auth/login', '/v1/auth/refresh'])

type Bearer = {
  /** The access token to send, if any. */
  token: () => string | null
  /** Called on a 401 to a request that carried a token: true when a new token was obtained (the request is then sent once more). */
  renew: () => Promise<boolean>
}

/** The typed client of the control plane's API (paths and bodies from the generated OpenAPI types). */
export type Fetch = (request: Request) => Promise<Response>

export function createApi({ baseUrl, fetch = (request) => globalThis.fetch(request), bearer }: { baseUrl: string; fetch?: Fetch; bearer: Bearer }): Api {
  const client = createClient<paths>({ baseUrl, fetch })
  const spares = new WeakMap<Request, Request>()
  client.use({
    onRequest({ request, schemaPath }) {
      const token = bearer.token()
      if (token && !TOKEN_ROUTES.has(schemaPath) && !request.headers.has('Authorization')) {
        request.headers.set('Authorization', `Bearer ${token}`)
        spares.set(request, request.clone())
      }
      return request
    },
    async onResponse({ request, response }) {
      const spare = spares.get(request)
      spares.delete(request)
      if (response.status !== 401 || !spare || !(await bearer.renew())) return response
      spare.headers.set('Authorization', `Bearer ${bearer.token()}`)
      return fetch(spare)
    },
  })
  return client
}

type Answer<T> = { data?: T; error?: unknown; response: Response }

/** The answer's data, or an ApiError from the documented error shape (status 0 when the API could not be reached). */
export async function call<T>(request: Promise<Answer<T>>): Promise<{ data: T; response: Response }> {
  let answer: Answer<T>
  try {
    answer = await request
  } catch (cause) {
    throw ApiError.network(cause)
  }
  if (answer.error !== undefined || !answer.response.ok) throw ApiError.fromResponse(answer.response, answer.error)
  return { data: answer.data as T, response: answer.response }
}

export async function data<T>(request: Promise<Answer<T>>): Promise<T> {
  return (await call(request)).data
}
