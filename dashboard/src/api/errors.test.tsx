import { screen } from '@testing-library/react'
import userEvent from '@testing-library/user-event'
import { describe, expect, it } from 'vitest'
import { RegisterForm } from '@/features/auth/forms'
import { apiError, fakeApi, json, renderWithSession } from '@/test/fake-api'
import { ApiError } from './errors'

describe('the documented error shape', () => {
  it('is read with its code, request id and field details', () => {
    const response = json(400, { error: { code: 'validation_error', message: 'the request body is invalid', request_id: 'req-42',
      details: [{ field: 'email', message: 'is not an e-mail address', type: 'value_error' }, { type: 'no field' }] } })
    const error = ApiError.fromResponse(response, { error: { code: 'validation_error', message: 'the request body is invalid', request_id: 'req-42',
      details: [{ field: 'email', message: 'is not an e-mail address' }, { type: 'no field' }] } })
    expect(error).toMatchObject({ status: 400, code: 'validation_error', requestId: 'req-42', message: 'the request body is invalid' })
    expect(error.forField('email')).toBe('is not an e-mail address')
    expect(error.details).toHaveLength(1)
  })

  it('keeps the status and request id of an answer that is not the shape', () => {
    const error = ApiError.fromResponse(new Response('Bad gateway', { status: 502, statusText: 'Bad Gateway', headers: { 'X-Request-ID': 'req-gw' } }), 'Bad gateway')
    expect(error).toMatchObject({ status: 502, code: 'http_502', message: 'Bad Gateway', requestId: 'req-gw' })
  })

  it('reads Retry-After of a 429', () => {
    const error = ApiError.fromResponse(new Response('{}', { status: 429, headers: { 'Retry-After': '17' } }), { error: { code: 'rate_limited', message: 'slow down', request_id: 'r' } })
    expect(error.retryAfter).toBe(17)
  })

  it('is shown in a form: field details next to their inputs, the others and the request id in the notice', async () => {
    const { session } = fakeApi({
      'POST /v1/auth/register': () => apiError(400, 'validation_error', 'the request body is invalid', [
        { field: 'email', message: 'the domain is a special-use name that cannot receive e-mail' },
        { field: 'password', message: 'String should have at least 8 characters' },
        { field: 'body', message: 'organization_name is required unless an invitation_token is given' },
      ]),
    })
    renderWithSession(<RegisterForm onDone={() => {}} />, session)
    await userEvent.type(screen.getByLabelText('E-mail'), 'ada@example.test')
    await userEvent.click(screen.getByRole('button', { name: 'Create account' }))

    const email = screen.getByLabelText('E-mail')
    expect(email).toHaveAttribute('aria-invalid', 'true')
    expect(email).toHaveAccessibleDescription('the domain is a special-use name that cannot receive e-mail')
    expect(screen.getByLabelText('Password')).toHaveAccessibleDescription(/At least 8 characters\. String should have at least 8 characters/)
    const notice = screen.getByRole('alert')
    expect(notice).toHaveTextContent('the request body is invalid')
    expect(notice).toHaveTextContent('body: organization_name is required unless an invitation_token is given')
    expect(notice).not.toHaveTextContent('special-use')
    expect(screen.getByTestId('request-id')).toHaveTextContent('req-validation_error')
    expect(notice).toHaveTextContent('HTTP 400')
  })

  it('says when the API cannot be reached', async () => {
    const { session, fetch } = fakeApi({})
    fetch.mockRejectedValueOnce(new TypeError('Failed to fetch'))
    renderWithSession(<RegisterForm onDone={() => {}} />, session)
    await userEvent.click(screen.getByRole('button', { name: 'Create account' }))
    expect(await screen.findByRole('alert')).toHaveTextContent('Could not reach the Orochi API')
  })
})
