import { queryOptions, useQuery } from '@tanstack/react-query'
import { data } from '@/api/client'
import { useApi } from '@/auth/context'

export function useCatalog() {
  const api = useApi()
  return useQuery(queryOptions({
    queryKey: ['catalog'],
    queryFn: () => data(api.GET('/v1/catalog')),
    staleTime: 10 * 60_000,
  }))
}
